"""Redis (rate limits, the room-is-live markers, the broker) stopped and started while tokens
are being minted: every admitted token's agents end up recorded, none is answered 5xx, and
none waits on Redis. The test runs its own redis-server on a free port, never the shared one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dispatchportal import redis as portal_redis
from rooms_app import services
from rooms_app.models import Dispatch, TokenFact
from tests.factories import AgentFactory, RuleFactory, make_client
from tests.support import RedisServer, eventually

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_redis(settings, monkeypatch) -> Iterator[RedisServer]:
    RedisServer.available()
    server = RedisServer()
    server.start()
    settings.REDIS_URL = server.url
    settings.CACHES = {"default": {"BACKEND": "dispatchportal.cache.RedisCache", "LOCATION": server.url}}
    monkeypatch.setattr(portal_redis, "REDIS_RETRY_AFTER_S", 0.2)
    # The broker stays the test settings' own: only the hot path's Redis goes away here.
    monkeypatch.setattr("rooms_app.services.facts._token_facts_apply_soon", lambda: None)
    yield server
    server.stop()
    portal_redis._down_until = 0.0


def test_redis_stopped_and_started_mid_load_loses_no_admitted_token(api, own_redis):
    RuleFactory(
        agent=AgentFactory(agent_name="support-agent"), room_match_value="support-*", delivery="token"
    )
    _, key = make_client("web", rooms=["support-*"])
    answers: dict[str, int] = {}

    def mint(room: str) -> int:
        answer = api.post(
            "/api/v1/token",
            {"room_name": room, "participant_identity": "ann"},
            format="json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )
        answers[room] = answer.status_code
        return answer.status_code

    for n in range(20):
        mint(f"support-before-{n}")
    own_redis.stop(crash=True)  # as a crash: this Redis keeps nothing on disk
    for n in range(20):
        mint(f"support-down-{n}")
    own_redis.start()
    counter = iter(range(10_000))

    def counted_in_redis() -> bool:
        try:
            return bool(list(portal_redis.redis_client().scan_iter("*rl*")))
        except portal_redis.REDIS_ERRORS:  # this probe's own connection died with the old server
            return False

    # Keep minting until the token path counts in Redis again (its next lease is taken there).
    eventually(
        lambda: (
            mint(f"support-after-{next(counter)}") == 201
            and portal_redis.redis_available()
            and counted_in_redis()
        ),
        timeout=10,
        what="the token path back on Redis",
    )

    assert set(answers.values()) == {201}  # never a 5xx, never refused for Redis's sake
    admitted = sorted(room for room, code in answers.items() if code == 201)
    assert sorted(TokenFact.objects.values_list("room_name", flat=True)) == admitted
    services.token_facts_apply()  # the sweep reconcile runs once the broker is back
    assert sorted(Dispatch.objects.values_list("room__name", flat=True)) == admitted
