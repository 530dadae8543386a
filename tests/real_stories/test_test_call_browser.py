"""The test call page (/admin/test-call/) in headless Chromium, against LiveKit's own server,
a real livekit-agents worker and the portal with its Celery worker (`stack`): a staff member
logs in, picks a client, a room and an identity, starts the call with the fake microphone,
and the page shows each step with its time, the agent present, and the agent's audio playing.
Also: an agent already in the room before the page joined, and an agent whose worker is absent
(the page's "why not?" link leads to the doctor for that room and agent).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from livekit import api

from tests.browser.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.factories import AgentFactory, RuleFactory, make_client

from .conftest import LoopThread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
PASSWORD = "pw-test-call-123"
# WebRTC on loopback (see test_browser_media.py), and Chromium's fake microphone and camera
# (a beeping tone) instead of a device, granted without a prompt.
ARGS = [
    *CHROMIUM_ARGS,
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
WAIT_MS = 45_000  # a worker takes the job and joins within seconds; a loaded machine is slower
TIME = re.compile(r"^\+(\d+\.\d{3}) s$")


class Browser(LoopThread):
    """Chromium driven by Playwright's async API on a loop thread of its own (the test's
    thread keeps `asyncio.run` for the LiveKit API calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.run(self._launch())

    async def _launch(self) -> None:
        from playwright.async_api import async_playwright

        self.playwright = await async_playwright().start()
        self.chromium = await self.playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)

    def new_page(self, base_url: str) -> Any:
        async def open_page() -> Any:
            self.context = await self.chromium.new_context(base_url=base_url)
            self.context.set_default_timeout(WAIT_MS)
            return await self.context.new_page()

        return self.run(open_page())

    def close(self) -> None:
        async def close() -> None:
            await self.chromium.close()
            await self.playwright.stop()

        try:
            self.run(close())
        finally:
            self.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make browser-deps)")
    browser = Browser()
    yield browser
    browser.close()


class CallPage:
    """The test call page as a person uses it; each method waits as a person would look."""

    def __init__(self, browser: Browser, page: Any) -> None:
        self.browser, self.page = browser, page

    def do(self, coroutine: Any) -> Any:
        return self.browser.run(coroutine, timeout=WAIT_MS / 1000 + 15)

    def log_in(self, path: str, user: str) -> None:
        async def go() -> None:
            await self.page.goto(path)
            # Not logged in: the admin's login page, which leads back here.
            assert urlsplit(self.page.url).path == "/admin/login/"
            assert parse_qs(urlsplit(self.page.url).query)["next"] == [path]
            await self.page.get_by_label("Username").fill(user)
            await self.page.get_by_label("Password").fill(PASSWORD)
            await self.page.get_by_role("button", name="Log in").click()
            await self.page.wait_for_url(f"**{path}")

        self.do(go())

    def start(self, *, client: str, identity: str, microphone: bool) -> None:
        async def go() -> None:
            await self.page.select_option("#id_client", label=client)
            await self.page.fill("#id_identity", identity)
            if microphone:
                await self.page.check("#id_microphone")
            await self.page.click("#call-start")

        self.do(go())

    def step(self, selector: str, state: str = "done") -> dict[str, str]:
        """Wait for the step to reach `state`; its time and detail as the page shows them."""

        async def go() -> dict[str, str]:
            li = self.page.locator(f"{selector}.tc-{state}")
            await li.wait_for()
            return {
                "time": await li.locator(".tc-time").inner_text(),
                "detail": await li.locator(".tc-detail").inner_text(),
            }

        return self.do(go())

    def detail_matches(self, selector: str, pattern: str) -> str:
        """Wait for the step's detail to match `pattern` (the ledger's news arrives by polling)."""
        from playwright.async_api import expect

        async def go() -> str:
            detail = self.page.locator(f"{selector} .tc-detail")
            await expect(detail).to_have_text(re.compile(pattern), timeout=WAIT_MS)
            return await detail.inner_text()

        return self.do(go())

    def seconds(self, shown: dict[str, str]) -> float:
        found = TIME.match(shown["time"])
        assert found, shown
        return float(found.group(1))

    def evaluate(self, script: str) -> Any:
        return self.do(self.page.evaluate(script))

    def shot(self, name: str) -> None:
        """A full-page screenshot under test-artifacts/ (kept by CI)."""
        ARTIFACTS.mkdir(exist_ok=True)
        self.do(self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True))

    def hang_up(self) -> None:
        self.do(self.page.click("#call-hangup"))


@pytest.fixture
def call_page(chromium, stack, django_user_model) -> Iterator[CallPage]:
    django_user_model.objects.create_superuser("staff", "staff@example.com", PASSWORD)
    page = CallPage(chromium, chromium.new_page(stack.portal_url))
    yield page
    page.evaluate(
        "() => window.testCall && window.testCall.current && window.testCall.current.room.disconnect()"
    )
    chromium.run(chromium.context.close())


AUDIO = """() => [...document.querySelectorAll('audio.agent-audio')].map((el) => ({
  agent: el.dataset.agent, paused: el.paused, time: el.currentTime,
  track: el.srcObject && el.srcObject.getAudioTracks()[0].readyState }))"""
LEVEL = "() => Number(document.querySelector('[data-agent=\"support-agent\"] .tc-level-value').textContent)"


def test_a_call_shows_each_step_and_the_agent_speaking(stack, agent_worker, call_page):
    RuleFactory(
        name="support rooms",
        agent=AgentFactory(agent_name="support-agent"),
        room_match_value="support-*",
        delivery="token",
    )
    make_client("web", rooms=["support-*"])
    agent_worker(agent_name="support-agent", behavior="speak")
    page = call_page
    page.log_in("/admin/test-call/?room=support-call-1", "staff")

    page.start(client="web (rooms: support-*)", identity="ann", microphone=True)

    minted = page.step('[data-step="minted"]')
    assert minted["detail"] == "agents: support-agent (rule 'support rooms', in the token)"
    joined = page.step('[data-step="joined"]')
    assert joined["detail"].startswith("as ann (room support-call-1, server ws://127.0.0.1:")
    agent = '[data-agent="support-agent"] [data-step="{}"]'
    present = page.step(agent.format("present"))
    [in_room] = stack.agents("support-call-1", "support-agent")
    assert present["detail"].startswith(f"{in_room.identity} joined after this page")
    dispatch = page.step(agent.format("dispatch"))
    # The ledger's dispatch, until it says the agent joined. LiveKit made its own dispatch from
    # the token's agents; the ledger shows its id when it saw it (ListDispatch), else only that
    # the agent came in the token (the agent's join reached the portal first).
    [livekit_dispatch] = stack.dispatches("support-call-1", "support-agent")
    page.detail_matches(
        agent.format("dispatch"),
        rf"^#\d+ \(Token minted, for ann\): (LiveKit's dispatch from the token: {livekit_dispatch.id} at "
        r"\+\d+\.\d{3} s|carried in the participant token; LiveKit dispatches it when the room starts); "
        r"status: Agent joined$",
    )
    job = page.step(agent.format("job"))
    assert job["detail"] == in_room.identity.removeprefix("agent-")  # the job's id, AJ_...
    audio = page.step(agent.format("audio"))
    assert audio["detail"].startswith("playing track TR_") and audio["detail"].endswith(in_room.identity)
    # The order things happened in, on the page's clock from Start.
    assert 0 <= page.seconds(minted) <= page.seconds(joined) <= page.seconds(present) <= page.seconds(audio)
    assert page.seconds(minted) <= page.seconds(dispatch)

    # The agent's tone reaches this browser: an element playing it, LiveKit's speaking sign,
    # and the level measured here.
    page.do(page.page.locator('[data-agent="support-agent"] .tc-speaking.tc-on').wait_for())
    [element] = page.evaluate(AUDIO)
    assert element["agent"] == "support-agent" and not element["paused"] and element["track"] == "live"
    page.do(page.page.wait_for_function(f"() => ({LEVEL})() > 0.01"))
    assert page.evaluate("() => document.querySelectorAll('.tc-why-not').length") == 0
    page.shot("test-call-agent-speaking")

    # The fake microphone is published: LiveKit has ann's audio track.
    page.step('[data-step="microphone"]')
    ann = stack.lk("room.get_participant", api.RoomParticipantIdentity(room="support-call-1", identity="ann"))
    assert [t.type for t in ann.tracks] == [api.TrackType.AUDIO]
    row = stack.wait_joined("support-call-1", "support-agent")
    assert row.participant_identity == in_room.identity
    page.hang_up()


def test_an_agent_already_in_the_room_is_seen_when_the_page_joins(stack, agent_worker, call_page):
    RuleFactory(
        name="support rooms",
        agent=AgentFactory(agent_name="support-agent"),
        room_match_value="support-*",
        delivery="token",
    )
    _, key = make_client("web", rooms=["support-*"])
    agent_worker(agent_name="support-agent", behavior="speak")
    # Bob's frontend came first: his token brought the agent, which is in the room now.
    stack.join(stack.token(key, "support-call-2", "bob"))
    row = stack.wait_joined("support-call-2", "support-agent")
    page = call_page
    page.log_in("/admin/test-call/?room=support-call-2", "staff")

    page.start(client="web (rooms: support-*)", identity="ann", microphone=False)

    minted = page.step('[data-step="minted"]')
    assert "the room is already live" in minted["detail"]
    joined = page.step('[data-step="joined"]')
    present = page.step('[data-agent="support-agent"] [data-step="present"]')
    assert present["detail"].startswith(f"{row.participant_identity} was already in the room")
    assert page.seconds(joined) <= page.seconds(present)
    # Bob's token dispatch, from the ledger: the one that brought the agent.
    dispatch = page.step('[data-agent="support-agent"] [data-step="dispatch"]')
    assert dispatch["detail"].startswith(f"#{row.pk} (Token minted, for bob)")
    assert dispatch["time"].startswith("-")  # before this call began
    page.step('[data-agent="support-agent"] [data-step="audio"]')
    page.do(page.page.locator('[data-agent="support-agent"] .tc-speaking.tc-on').wait_for())
    page.do(page.page.wait_for_function(f"() => ({LEVEL})() > 0.01"))
    [element] = page.evaluate(AUDIO)
    assert not element["paused"] and element["track"] == "live"
    assert page.evaluate("() => document.querySelectorAll('.tc-agent[data-agent]').length") == 1
    assert page.evaluate("() => document.querySelectorAll('.tc-why-not').length") == 0
    page.shot("test-call-agent-already-there")


def test_without_a_worker_the_page_asks_the_doctor_why_not(stack, call_page):
    RuleFactory(
        name="support rooms",
        agent=AgentFactory(agent_name="support-agent", join_deadline_s=4),
        room_match_value="support-*",
        delivery="token",
    )
    make_client("web", rooms=["support-*"])
    page = call_page
    page.log_in("/admin/test-call/?room=support-call-3", "staff")

    page.start(client="web (rooms: support-*)", identity="ann", microphone=False)

    page.step('[data-step="joined"]')
    link = page.page.locator('[data-agent="support-agent"] .tc-why-not a.why-not')
    page.do(link.wait_for())
    href = page.do(link.get_attribute("href"))
    target = urlsplit(href)
    assert target.path == "/admin/dispatch-doctor/"
    assert parse_qs(target.query) == {
        "room": ["support-call-3"],
        "agent": ["support-agent"],
        "identity": ["ann"],
    }
    assert (
        page.evaluate(
            '() => document.querySelector(\'[data-agent="support-agent"] [data-step="present"]\').className'
        )
        != "tc-done"
    )
    assert stack.agents("support-call-3") == []
    page.shot("test-call-why-not")

    # The doctor answers for that room and agent.
    page.do(page.page.goto(href))
    verdict = page.do(page.page.locator("#doctor-verdict").inner_text())
    assert "support-agent" in verdict
    assert page.do(page.page.input_value("#id_room")) == "support-call-3"
    assert page.do(page.page.input_value("#id_agent")) == "support-agent"
    page.shot("test-call-doctor")


def test_a_room_no_rule_takes_says_no_agent_will_come(stack, call_page):
    RuleFactory(
        name="support rooms", agent=AgentFactory(agent_name="support-agent"), room_match_value="support-*"
    )
    make_client("web", rooms=["support-*", "lobby-*"])
    page = call_page
    page.log_in("/admin/test-call/?room=lobby-4", "staff")

    page.start(client="web (rooms: support-*, lobby-*)", identity="ann", microphone=False)

    minted = page.step('[data-step="minted"]')
    assert minted["detail"].startswith("no rule gives this room and identity an agent")
    page.step('[data-step="joined"]')
    notice = page.do(page.page.locator("#no-agent").inner_text())
    assert notice.startswith("No agent will come: no rule gives this room an agent for this identity.")
    assert page.evaluate("() => document.querySelectorAll('.tc-agent').length") == 0

    # Explain runs the rules for that room and identity: none takes it.
    href = page.do(page.page.locator("#no-agent a.explain-link").get_attribute("href"))
    page.do(page.page.goto(href))
    verdict = page.do(page.page.locator("#explain-verdict").inner_text())
    assert verdict.strip() == "No agent would be dispatched to room lobby-4."
