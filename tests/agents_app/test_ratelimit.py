"""The per-client rate limit, counted in leases of the shared Redis count.

Each gunicorn process keeps its own leases (`ratelimit._leases`); a test plays several
processes by giving each its own lease table, against one real Redis."""

from __future__ import annotations

import itertools
import time

import pytest

from agents_app import ratelimit

pytestmark = pytest.mark.needs_redis


@pytest.fixture(autouse=True)
def _one_window():
    """Each test runs within one minute's window (the count starts afresh in the next)."""
    left = ratelimit.WINDOW_S - time.time() % ratelimit.WINDOW_S
    if left < 3:
        time.sleep(left + 0.05)


class Processes:
    """Several processes' lease tables, taking turns with the one Redis count."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
        self.monkeypatch = monkeypatch
        self.tables: list[dict] = [{} for _ in range(n)]

    def admit(self, process: int, *, limit: int, key: str = "client:1") -> bool:
        self.monkeypatch.setattr(ratelimit, "_leases", self.tables[process])
        return ratelimit.admit(key=key, limit=limit) == 0


def test_processes_taking_turns_admit_exactly_the_limit(monkeypatch):
    limit = 250  # leases of 2
    assert ratelimit.lease_size(limit) == 2
    processes = Processes(monkeypatch, 3)
    admitted = [processes.admit(p, limit=limit) for p in itertools.islice(itertools.cycle(range(3)), 400)]
    assert sum(admitted) == limit
    # After the first refusal only the slots other processes still held are handed out.
    first_refused = admitted.index(False)
    assert sum(admitted[first_refused:]) <= (3 - 1) * (ratelimit.lease_size(limit) - 1)


def test_a_partial_lease_never_goes_over_the_limit(monkeypatch):
    limit = 251  # leases of 2: the last one only has 1 slot left under the limit
    processes = Processes(monkeypatch, 2)
    admitted = [processes.admit(p, limit=limit) for p in itertools.islice(itertools.cycle(range(2)), 400)]
    assert sum(admitted) == limit


def test_slots_one_process_holds_are_refused_to_the_others_but_not_lost(monkeypatch):
    limit = 250
    processes = Processes(monkeypatch, 2)
    assert processes.admit(0, limit=limit)  # process 0 reserves 2 and uses 1
    others = sum(processes.admit(1, limit=limit) for _ in range(300))
    assert others == limit - 2  # the slot process 0 still holds is not theirs
    assert processes.admit(0, limit=limit)  # ... it is process 0's, which uses it
    assert not processes.admit(0, limit=limit)


def test_small_limits_count_every_request_in_redis(monkeypatch):
    """Below 200 a minute the lease is 1: the count is exact whichever process asks."""
    processes = Processes(monkeypatch, 2)
    admitted = [processes.admit(p % 2, limit=5) for p in range(8)]
    assert admitted == [True] * 5 + [False] * 3


def test_clients_are_counted_apart(monkeypatch):
    processes = Processes(monkeypatch, 1)
    assert [processes.admit(0, limit=2, key="client:1") for _ in range(3)] == [True, True, False]
    assert processes.admit(0, limit=2, key="client:2")


def test_the_refusal_says_when_the_window_ends(monkeypatch):
    processes = Processes(monkeypatch, 1)
    processes.admit(0, limit=1)
    retry_after = ratelimit.admit(key="client:1", limit=1)
    assert 1 <= retry_after <= ratelimit.WINDOW_S
