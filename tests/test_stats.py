"""The one percentile (dispatchportal.stats): nearest rank, and the same figure on every page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dispatchportal.stats import percentile


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([1.0, 2.0, 9.0], 0.5, 2.0),
        ([1.0, 2.0, 9.0], 0.95, 9.0),
        ([1.0, 2.0], 0.5, 1.0),  # nearest rank: a value that occurred, not 1.5
        ([4.0, 1.0, 3.0, 2.0], 0.5, 2.0),  # unsorted input; the rounded-index definition said 3.0
        ([4.0, 1.0, 3.0, 2.0], 0.75, 3.0),
        ([7.0], 0.95, 7.0),
        ([3.0, 1.0], 0.0, 1.0),
        ([3.0, 1.0], 1.0, 3.0),
        ([0.1 * i for i in range(1, 21)], 0.95, pytest.approx(1.9)),  # 19th of 20
    ],
)
def test_nearest_rank(values, fraction, expected):
    assert percentile(values, fraction) == expected


def test_no_values_no_percentile_and_a_bad_fraction_is_refused():
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        percentile([1.0], 95)


@pytest.mark.django_db
def test_the_dashboard_and_the_canaries_give_one_p50_for_the_same_times():
    """Four joins of 1, 2, 3 and 4 s: the dashboard's p50 and the canary summary's p50 agree
    (they once used two definitions and said 2 s and 3 s)."""
    from operator_views.dashboard import agent_stats_get
    from rooms_app.models import Dispatch, Room
    from tests.factories import AgentFactory
    from watch_app.models import CanaryRun, CanarySchedule
    from watch_app.selectors import canaries_summary

    agent = AgentFactory(agent_name="support-agent")
    CanarySchedule.objects.create(agent=agent)
    now = timezone.now()
    for i, seconds in enumerate((1.0, 2.0, 3.0, 4.0)):
        room = Room.objects.create(name=f"support-{i}", status="finished")
        row = Dispatch.objects.create(
            room=room, agent_name="support-agent", source="rule", status="agent_joined"
        )
        start = now - timedelta(minutes=10 - i)
        Dispatch.objects.filter(pk=row.pk).update(
            created_at=start, requested_at=start, joined_at=start + timedelta(seconds=seconds)
        )
        CanaryRun.objects.create(
            agent_name="support-agent",
            room_name=f"dp-canary-{i}",
            status="success",
            join_s=seconds,
            started_at=start,
        )

    dashboard = agent_stats_get()["support-agent"]["hour"]
    [summary] = canaries_summary()
    assert dashboard.p50_s == summary.p50_join_s == 2.0
    assert dashboard.p95_s == summary.p95_join_s == 4.0
