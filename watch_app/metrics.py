"""Canary metrics on /metrics (the project's multiprocess registry collects them)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from dispatchportal.metrics import TIME_TO_JOIN_BUCKETS, _safe

CANARY_RUNS = Counter(
    "dispatchportal_canary_runs_total",
    "Canary dispatches by agent and outcome (success, failed).",
    ["agent", "outcome"],
)
CANARY_SECONDS = Histogram(
    "dispatchportal_canary_seconds",
    "Seconds from a canary's CreateDispatch to: the answer (dispatch), a job (job), the agent joined (join).",
    ["agent", "stage"],
    buckets=TIME_TO_JOIN_BUCKETS,
)


@_safe
def canary_run_record(*, agent: str, success: bool, times: dict[str, float | None]) -> None:
    CANARY_RUNS.labels(agent=agent, outcome="success" if success else "failed").inc()
    for stage, seconds in times.items():
        if seconds is not None:
            CANARY_SECONDS.labels(agent=agent, stage=stage).observe(seconds)
