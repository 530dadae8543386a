"""LiveKit's browser SDK (`livekit-client`, tests/js) in headless Chromium, against LiveKit's
own server over WebRTC on loopback: a frontend fetches a portal token with
`TokenSource.endpoint`, joins, and sees the agent, whichever came first. It follows the
README's advice: read `remoteParticipants` after connecting AND listen for
`ParticipantConnected` (an agent that joined first raises no event for a late frontend).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agents_app.test_livekit_client_sdk import JS_DIR, node  # noqa: F401  (the fixture)
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.factories import AgentFactory, RuleFactory, make_client
from tests.support import eventually

from .conftest import LoopThread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
UMD = JS_DIR / "node_modules" / "livekit-client" / "dist" / "livekit-client.umd.js"
# WebRTC between Chromium and the server, both on 127.0.0.1: Chromium drops loopback
# candidates unless told, and would hide its own host addresses behind mDNS names.
MEDIA_ARGS = [
    *CHROMIUM_ARGS,
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
]

JOIN = """async ({tokenUrl, key, room, identity}) => {
  const { Room, RoomEvent, TokenSource } = LivekitClient;
  const source = TokenSource.endpoint(tokenUrl, { headers: { Authorization: `Bearer ${key}` } });
  const { serverUrl, participantToken } = await source.fetch({ roomName: room, participantIdentity: identity });
  const lkRoom = new Room();
  window.agents = { event: [], present: [] };
  lkRoom.on(RoomEvent.ParticipantConnected, (p) => { if (p.isAgent) window.agents.event.push(p.identity); });
  await lkRoom.connect(serverUrl, participantToken);
  for (const p of lkRoom.remoteParticipants.values()) { if (p.isAgent) window.agents.present.push(p.identity); }
  window.lkRoom = lkRoom;
  return { state: lkRoom.state, identity: lkRoom.localParticipant.identity };
}"""


class Frontend(LoopThread):
    """Headless Chromium driven by Playwright's async API on a loop thread of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.run(self._launch())

    async def _launch(self) -> None:
        from playwright.async_api import async_playwright

        self.playwright = await async_playwright().start()
        self.browser = await self.playwright.chromium.launch(executable_path=str(CHROMIUM), args=MEDIA_ARGS)

    def open(self, url: str) -> None:
        """A page of the portal's origin (so the token fetch is same-origin) with livekit-client."""

        async def open_page() -> None:
            self.context = await self.browser.new_context()
            self.page = await self.context.new_page()
            await self.page.goto(url)
            await self.page.add_script_tag(path=str(UMD))

        self.run(open_page())

    def evaluate(self, script: str, arg: object = None) -> object:
        return self.run(self.page.evaluate(script, arg), timeout=60)

    def close(self) -> None:
        async def close() -> None:
            await self.browser.close()
            await self.playwright.stop()

        try:
            self.run(close())
        finally:
            self.stop()


@pytest.fixture(scope="module")
def media_browser(node) -> Iterator[Frontend]:  # noqa: F811  (node: installs tests/js)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make browser-deps)")
    frontend = Frontend()
    yield frontend
    frontend.close()


@pytest.fixture
def frontend(media_browser, stack) -> Iterator[Frontend]:
    media_browser.open(f"{stack.portal_url}/admin/login/")  # any page of the origin
    yield media_browser
    media_browser.evaluate("() => window.lkRoom && window.lkRoom.disconnect()")
    media_browser.run(media_browser.context.close())


def browser_join(frontend: Frontend, stack, key: str, room: str) -> dict:
    return frontend.evaluate(
        JOIN, {"tokenUrl": f"{stack.portal_url}/api/v1/token", "key": key, "room": room, "identity": "ann"}
    )


def seen(frontend: Frontend) -> dict:
    return frontend.evaluate("() => window.agents")


def test_the_browser_joins_first_and_sees_the_agent_the_token_brought(stack, agent_worker, frontend):
    RuleFactory(
        agent=AgentFactory(agent_name="support-agent"), room_match_value="support-*", delivery="token"
    )
    _, key = make_client("web", rooms=["support-*"])
    agent_worker(agent_name="support-agent")

    joined = browser_join(frontend, stack, key, "support-b1")

    assert joined == {"state": "connected", "identity": "ann"}
    agents = eventually(
        lambda: seen(frontend)["event"], timeout=30, what="ParticipantConnected for the agent"
    )
    [agent] = stack.agents("support-b1", "support-agent")
    assert agents == [agent.identity]
    row = stack.wait_joined("support-b1", "support-agent")
    assert row.delivery == "token" and row.participant_identity == agent.identity


def test_the_agent_joined_first_and_the_browser_sees_it_among_the_participants(stack, agent_worker, frontend):
    AgentFactory(agent_name="support-agent")
    _, key = make_client("web", rooms=["support-*"], agent_names=["support-agent"])
    agent_worker(agent_name="support-agent")
    stack.portal("/api/v1/dispatches", key, {"room_name": "support-b2", "agent_name": "support-agent"})
    row = stack.wait_joined("support-b2", "support-agent")

    joined = browser_join(frontend, stack, key, "support-b2")

    assert joined["state"] == "connected"
    # No ParticipantConnected for an agent already there: only remoteParticipants shows it.
    assert seen(frontend) == {"event": [], "present": [row.participant_identity]}
