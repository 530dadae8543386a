"""The dispatch health dashboard in the admin (the doctor's page is `operator_views.doctor.views`).

Dashboard: first, one line saying whether dispatch is healthy right now and what needs
attention (`glance`); then per agent, the dispatch success rate and time-to-join p50/p95 over
the last hour and day, drawn as charts; live rooms missing an expected agent; the last failures,
each one click away from the doctor's verdict. The open page refreshes its figures.

`reads` holds its reads of the ledger, `glance` the first screen, `charts` the SVG charts,
`views` the pages.
"""

from .reads import AgentStats, agent_stats_get, outcomes_by_hour, rooms_missing_agents
from .views import dashboard_live_view, dashboard_view

__all__ = [
    "AgentStats",
    "agent_stats_get",
    "dashboard_live_view",
    "dashboard_view",
    "outcomes_by_hour",
    "rooms_missing_agents",
]
