"""factory_boy factories for the models tests create."""

from __future__ import annotations

from collections.abc import Sequence

import factory

from agents_app.models import Agent, DispatchRule
from agents_app.services import api_client_create
from rooms_app.models import Dispatch


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


def token_recorded(room: str, identity: str, agent_name: str, *, metadata: str = "", delivery: str = "token"):
    """A token minted for `identity` carrying one agent, recorded and applied to the ledger
    (what the token endpoint and the fact's application do); returns its dispatches."""
    import time

    agents = [{"agent_name": agent_name, "rule": "rule", "metadata": metadata, "delivery": delivery}]
    return token_dispatches_record(
        room_name=room, participant_identity=identity, agents=agents, client="web", minted_at=time.time()
    )


def token_dispatches_record(
    *,
    room_name: str,
    participant_identity: str,
    agents: Sequence[dict[str, str]],
    client: str,
    minted_at: float,
) -> list[Dispatch]:
    """A token fact as the token endpoint records it, applied at once by the ledger's own
    `token_fact_apply` (what the scheduled apply does)."""
    from datetime import UTC, datetime

    from django.db import transaction
    from django.utils import timezone

    from rooms_app.models import TokenFact
    from rooms_app.services import token_fact_apply

    fact = TokenFact.objects.create(
        minted_at=datetime.fromtimestamp(minted_at, tz=UTC),
        room_name=room_name,
        participant_identity=participant_identity,
        client=client,
        agents=[dict(a) for a in agents],
        applied_at=timezone.now(),
    )
    with transaction.atomic():
        return token_fact_apply(fact=fact)
