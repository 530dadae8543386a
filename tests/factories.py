"""factory_boy factories for the models tests create."""

from __future__ import annotations

import factory

from agents_app.models import Agent, DispatchRule
from agents_app.services import api_client_create


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent
        django_get_or_create = ("agent_name",)

    agent_name = factory.Sequence(lambda n: f"agent-{n}")
    display_name = factory.LazyAttribute(lambda o: o.agent_name.title())


class RuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DispatchRule

    name = factory.Sequence(lambda n: f"rule-{n}")
    agent = factory.SubFactory(AgentFactory)
    room_match_kind = "glob"
    room_match_value = "*"
    priority = 100


def make_client(name: str = "web", *, rooms: list[str] | None = None, **fields):
    """An API client and its key (the only time the key exists in clear)."""
    client, key = api_client_create(name=name, room_patterns=rooms if rooms is not None else ["*"], **fields)
    return client, key
