"""Writes to the dispatch ledger and the dispatch lifecycle's calls to LiveKit.

- `facts`: the tokens minted (one row each, marked when applied) and their application to the ledger; the agent
  names seen and the worker's heartbeat (one row each, kept current);
- `ledger`: rooms, dispatch rows, compare-and-set transitions, re-dispatch and fallback;
- `triggers`: what asks for an agent (rules, Dispatch API, admin) and what the
  webhooks report (agents joining and leaving);
- `lifecycle`: the calls to LiveKit the Celery tasks make (CreateDispatch exactly once,
  DeleteDispatch, the join-deadline check, the token's join check);
- `webhook_events`: LiveKit's verified webhooks, recorded on the request and applied off it;
- `dead`: an agent whose worker stopped answering, recorded before LiveKit notices;
- `jobs`: how the services ask for those tasks without importing them.

Lifecycle of one dispatch row (one attempt):
  pending -> requested (CreateDispatch answered, or an existing LiveKit dispatch adopted)
          -> job_assigned (ListDispatch shows a job) -> agent_joined (the agent's participant)
  or a final status: no_worker, failed, timed_out, cancelled, room_closed. A failure past the
  join deadline re-dispatches as a new row (attempt + 1), then the agent's fallback, then gives up.

Import rule: `agents_app.services` and `rooms_app.tasks` import this package, so nothing here
imports either of them, not even inside a function (`tests/test_import_layers.py`): of
agents_app, only its models, selectors and rules.
"""

from .dead import WORKER_STOPPED, agent_dead_record
from .facts import (
    APPLY_WINDOW_S,
    HEARTBEAT_FRESH,
    HEARTBEAT_INTERVAL_S,
    agent_sightings,
    agents_seen_in,
    agents_seen_record,
    token_fact_apply,
    token_fact_intake,
    token_facts_apply,
    worker_heartbeat,
)
from .ledger import (
    DEADLINE_GRACE_S,
    FINAL_STATUSES,
    ROOM_FRESH,
    RoomSeen,
    RoomsObserved,
    agent_extra_remove,
    agent_joined_record,
    agent_left_record,
    default_metadata,
    dispatch_create,
    dispatch_deadline_arm,
    dispatch_deliver_explicitly,
    dispatch_note,
    dispatch_retry,
    dispatch_transition,
    give_up_reason,
    job_assigned_record,
    livekit_took_at,
    next_attempt_plan,
    room_finished,
    room_get_or_create,
    room_observe,
    room_participants_observe,
    rooms_close,
    rooms_observe,
    session_close_previous,
    token_deadlines_arm,
)
from .lifecycle import (
    DispatchInFlight,
    agent_participant_remove,
    dispatch_deadline_check,
    dispatch_remove,
    dispatch_request,
    dispatch_token_join_check,
    dispatch_unavailable_note,
)
from .triggers import (
    agent_participant_joined,
    agent_participant_left,
    dispatch_api_create,
    dispatch_cancel,
    dispatch_redispatch,
    person_joined,
    room_explicit_agents,
    room_rules_apply,
)
from .webhook_events import webhook_event_apply, webhook_event_record, webhook_events_apply

__all__ = [
    "webhook_event_apply",
    "webhook_event_record",
    "webhook_events_apply",
    "APPLY_WINDOW_S",
    "HEARTBEAT_FRESH",
    "HEARTBEAT_INTERVAL_S",
    "agent_sightings",
    "agents_seen_in",
    "agents_seen_record",
    "DEADLINE_GRACE_S",
    "FINAL_STATUSES",
    "ROOM_FRESH",
    "DispatchInFlight",
    "agent_extra_remove",
    "WORKER_STOPPED",
    "agent_dead_record",
    "agent_joined_record",
    "agent_left_record",
    "agent_participant_joined",
    "agent_participant_left",
    "default_metadata",
    "dispatch_api_create",
    "dispatch_cancel",
    "dispatch_create",
    "dispatch_deadline_arm",
    "dispatch_deliver_explicitly",
    "dispatch_deadline_check",
    "dispatch_note",
    "dispatch_redispatch",
    "person_joined",
    "dispatch_remove",
    "dispatch_request",
    "dispatch_token_join_check",
    "dispatch_retry",
    "dispatch_transition",
    "agent_participant_remove",
    "dispatch_unavailable_note",
    "give_up_reason",
    "job_assigned_record",
    "livekit_took_at",
    "next_attempt_plan",
    "room_explicit_agents",
    "room_finished",
    "room_participants_observe",
    "rooms_close",
    "room_get_or_create",
    "room_rules_apply",
    "room_observe",
    "RoomSeen",
    "RoomsObserved",
    "rooms_observe",
    "session_close_previous",
    "token_deadlines_arm",
    "token_fact_apply",
    "token_fact_intake",
    "token_facts_apply",
    "worker_heartbeat",
]
