"""The control API itself: who may use it, reset, seeding, and the in-process server."""

from __future__ import annotations

import socket
import time

import pytest
from livekit import api

from livekit_emulator import ControlClient, ControlError, run_in_thread

from .support import call, join_token

pytestmark = pytest.mark.emulator_only("the control API")


def _non_loopback_address() -> str | None:
    # A UDP "connection" sends nothing; it only makes the OS pick an outgoing interface.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.fixture
def remote_address() -> str:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


def test_control_is_refused_to_non_loopback_clients(remote_address):
    with run_in_thread(host="0.0.0.0") as server:
        port = server.control_url.rsplit(":", 1)[1]

        with pytest.raises(ControlError) as error:
            ControlClient(f"http://{remote_address}:{port}").state()

        assert error.value.status == 403
        assert server.control.state()["rooms"] == []  # loopback still allowed


def test_a_control_token_admits_remote_clients(remote_address):
    with run_in_thread(host="0.0.0.0", control_token="let-me-in") as server:
        port = server.control_url.rsplit(":", 1)[1]

        assert ControlClient(f"http://{remote_address}:{port}", token="let-me-in").state()["rooms"] == []
        with pytest.raises(ControlError) as error:
            ControlClient(f"http://{remote_address}:{port}", token="wrong").state()
        assert error.value.status == 401


def test_reset_forgets_everything(livekit_server):
    livekit_server.control.add_worker("triage")
    livekit_server.control.join(join_token(livekit_server, "busy", "alice"))
    livekit_server.control.faults(latency_ms=5)
    livekit_server.control.webhooks(url="http://127.0.0.1:9/nowhere")

    livekit_server.control.reset()

    state = livekit_server.control.state()
    assert (state["rooms"], state["workers"], state["dispatches"]) == ([], [], [])
    assert state["faults"]["latency_ms"] == 0 and livekit_server.control.webhook_status()["url"] is None


def test_seeding_rooms_in_bulk(livekit_server):
    seeded = livekit_server.control.create_rooms(
        [{"name": f"bulk-{i}", "participants": [{"identity": "a"}, {"identity": "b"}]} for i in range(50)]
    )

    rooms = call(livekit_server, lambda lk: lk.room.list_rooms(api.ListRoomsRequest()))

    assert len(seeded["rooms"]) == 50 and all(r["created"] for r in seeded["rooms"])
    assert {r.num_participants for r in rooms.rooms} == {2}


def test_bad_control_input_is_a_400(livekit_server):
    with pytest.raises(ControlError) as error:
        livekit_server.control.add_worker("x", behavior="explode")
    assert error.value.status == 400

    with pytest.raises(ControlError) as error:
        livekit_server.control.faults(error_rate=2)
    assert error.value.status == 400


def test_an_in_process_server_starts_quickly_and_serves_the_api():
    started = time.monotonic()
    with run_in_thread(keys={"k": "s" * 40}, webhook_url=None) as server:
        elapsed = time.monotonic() - started
        health = call(server, lambda lk: lk.room.list_rooms(api.ListRoomsRequest()))

    assert elapsed < 0.5 and list(health.rooms) == []


@pytest.mark.parametrize(
    "body",
    [
        {"refuse_availability": "yes"},
        {"drop_assignment": 1},
        {"assignment_delay_ms": -5},
        {"assignment_delay": 100},
    ],
)
def test_bad_worker_faults_are_refused_and_change_nothing(livekit_server, body):
    livekit_server.control.worker_faults(drop_assignment=True)

    with pytest.raises(ControlError) as error:
        livekit_server.control.request("POST", "/_emulator/worker_faults", body)

    assert error.value.status == 400 and error.value.body["error"]
    assert livekit_server.control.state()["worker_faults"] == {
        "refuse_availability": False,
        "drop_assignment": True,
        "assignment_delay_ms": 0.0,
    }


def test_disconnecting_an_unknown_worker_is_not_found(livekit_server):
    with pytest.raises(ControlError) as error:
        livekit_server.control.disconnect_worker("AW_nobody")

    assert error.value.status == 404


def test_disconnecting_a_simulated_worker_fails_its_job(livekit_server):
    worker = livekit_server.control.add_worker("triage")
    call(
        livekit_server,
        lambda lk: lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(room="r", agent_name="triage")
        ),
    )
    livekit_server.control.wait_for(lambda s: s["dispatches"] and s["dispatches"][-1]["jobs"], room="r")

    livekit_server.control.disconnect_worker(worker["id"])

    state = livekit_server.control.state(room="r")
    [job] = [j for d in state["dispatches"] for j in d["jobs"]]
    assert (job["status"], job["error"]) == ("JS_FAILED", "agent worker disconnected")
    assert state["workers"] == []
