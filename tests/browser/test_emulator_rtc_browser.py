"""LiveKit's browser SDK (livekit-client, the copy the test call page serves) in headless
Chromium joins the LiveKit emulator over WebRTC: it falls back from `/rtc/v1` to `/rtc`,
connects, finds the participants and the agent already there, hears of one arriving later,
and leaves, with the webhooks that follow. No media crosses (the emulator has none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.livekit_emulator.support import WebhookReceiver, eventually, join_token, start_receiver

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]
UMD = Path(__file__).resolve().parents[2] / "static" / "vendor" / "livekit-client" / "livekit-client.umd.js"

JOIN = """async ({url, token}) => {
  const { Room, RoomEvent } = LivekitClient;
  const room = new Room();
  window.heard = [];
  room.on(RoomEvent.ParticipantConnected, (p) => window.heard.push(`joined ${p.identity}`));
  room.on(RoomEvent.ParticipantDisconnected, (p) => window.heard.push(`left ${p.identity}`));
  await room.connect(url, token);
  window.lkRoom = room;
  return {
    state: room.state,
    sid: room.localParticipant.sid,
    present: [...room.remoteParticipants.values()].map((p) => [p.identity, p.isAgent]).sort(),
  };
}"""


@pytest.fixture
def receiver(livekit_emulator_reset) -> Iterator[WebhookReceiver]:
    received, httpd = start_receiver()
    livekit_emulator_reset.control.webhooks(url=received.url, retry_backoff_ms=20)
    yield received
    httpd.shutdown()
    httpd.server_close()


def test_livekit_client_joins_sees_the_agent_and_the_others_and_leaves(
    browser, livekit_emulator_reset, receiver
):
    server = livekit_emulator_reset
    server.control.add_worker("triage")
    server.control.join(join_token(server, "browser-call", "early", agents=[("triage", "")]))
    agent = eventually(
        lambda: [
            p
            for p in server.control.state(room="browser-call")["rooms"][0]["participants"]
            if p["kind"] == "AGENT"
        ]
    )[0]
    page = browser.new_page()
    try:
        page.set_content("<!doctype html><title>caller</title>")
        page.add_script_tag(path=str(UMD))

        joined = page.evaluate(
            JOIN, {"url": server.ws_url, "token": join_token(server, "browser-call", "caller")}
        )

        assert joined["state"] == "connected" and joined["sid"].startswith("PA_")
        assert joined["present"] == sorted([[agent["identity"], True], ["early", False]])
        server.control.join(join_token(server, "browser-call", "late"))
        page.wait_for_function("window.heard.includes('joined late')", timeout=10_000)
        server.control.leave("browser-call", "late")
        page.wait_for_function("window.heard.includes('left late')", timeout=10_000)

        page.evaluate("window.lkRoom.disconnect()")

        eventually(lambda: "caller" not in _identities(server), timeout=10)
        eventually(lambda: ("participant_left", "caller") in _participant_events(receiver), timeout=10)
        assert ("participant_joined", "caller") in _participant_events(receiver)
    finally:
        page.close()


def _identities(server) -> list[str]:
    return [p["identity"] for p in server.control.state(room="browser-call")["rooms"][0]["participants"]]


def _participant_events(receiver: WebhookReceiver) -> list[tuple[str, str]]:
    return [
        (r.json["event"], r.json["participant"]["identity"])
        for r in list(receiver.received)
        if r.json["event"].startswith("participant_")
    ]
