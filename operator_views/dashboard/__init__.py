"""The dispatch health dashboard in the admin (the doctor's page is `operator_views.doctor.views`).

Dashboard: per agent, the dispatch success rate and time-to-join p50/p95 over the last hour
and day, drawn as charts; rooms waiting for an agent right now and for how long; the last
failures, each one click away from the doctor's verdict. The open page refreshes its figures.

`reads` holds its reads of the ledger, `charts` the SVG charts, `views` the pages.
"""

from .reads import AgentStats, agent_stats_get, outcomes_by_hour, percentile, rooms_waiting_list
from .views import dashboard_live_view, dashboard_view

__all__ = [
    "AgentStats",
    "agent_stats_get",
    "dashboard_live_view",
    "dashboard_view",
    "outcomes_by_hour",
    "percentile",
    "rooms_waiting_list",
]
