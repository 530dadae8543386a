"""The dashboard block: open alerts, each agent's workers, and failing canaries, as an admin sees them."""

from __future__ import annotations

from datetime import timedelta

from django.template.loader import render_to_string
from django.utils import timezone

from tests.factories import AgentFactory
from watch_app import alerts
from watch_app.models import CanaryRun, CanarySchedule, WorkerEndpoint
from watch_app.selectors import watch_dashboard


def test_block_shows_alerts_workers_and_canaries(db):
    now = timezone.now()
    full = AgentFactory(agent_name="busy")
    WorkerEndpoint.objects.create(
        agent=full, url="http://10.0.0.5:8081", healthy=True, answered_at=now, load=0.97, active_jobs=12
    )
    flaky = AgentFactory(agent_name="flaky")
    CanarySchedule.objects.create(agent=flaky)
    for n, status in enumerate(["success", "failed", "failed"]):
        CanaryRun.objects.create(
            agent_name="flaky",
            room_name=f"dp-canary-flaky-{n}",
            status=status,
            started_at=now + timedelta(seconds=n),
            join_s=0.4 if status == "success" else None,
            error="" if status == "success" else "no worker registered as 'flaky' took the job within 20 s",
        )
    alerts.incident_raise(
        key="canary_failing:flaky", kind="canary_failing", summary="Canary for 'flaky' failed 2 times"
    )

    html = render_to_string("watch_app/dashboard_block.html", {"watch": watch_dashboard(now=now)})

    assert "Canary for &#x27;flaky&#x27; failed 2 times" in html
    assert "workers for &#x27;busy&#x27; are full (load 0.97)" in html
    assert "no health URL registered for &#x27;flaky&#x27;" in html
    canary_row = html[html.index('class="watch-canary watch-failing"') :]
    assert "<td>2</td>" in canary_row and "0.4 / 0.4" in canary_row
