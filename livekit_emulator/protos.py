"""Conversion between the emulator's dataclasses and `livekit.protocol` messages, so every
answer and webhook carries the fields LiveKit fills, with LiveKit's units (seconds for rooms
and participants, nanoseconds for dispatches and jobs)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from livekit.protocol import agent, agent_dispatch, models, webhook
from livekit.protocol import room as room_pb

from .models import AgentSpec, Dispatch, Job, Participant, Room, RoomConfig, new_id

_NS = 1_000_000_000
# The codecs livekit-server v1.13.5 enables by default, in its order.
ENABLED_CODECS = (
    "audio/PCMU",
    "audio/PCMA",
    "audio/opus",
    "audio/red",
    "video/VP8",
    "video/H264",
    "video/VP9",
    "video/AV1",
    "video/H265",
    "video/rtx",
)


def _ns(seconds: float) -> int:
    return int(seconds * _NS) if seconds else 0


def _whole_seconds(seconds: float) -> int:
    # The protobuf fields are whole seconds; round a fractional test timeout up, never to 0.
    return math.ceil(seconds)


def room_proto(room: Room) -> models.Room:
    return models.Room(
        sid=room.sid,
        name=room.name,
        empty_timeout=_whole_seconds(room.empty_timeout),
        departure_timeout=_whole_seconds(room.departure_timeout),
        max_participants=room.max_participants,
        creation_time=int(room.created_at),
        creation_time_ms=int(room.created_at * 1000),
        metadata=room.metadata,
        num_participants=room.num_participants,
        turn_password=room.turn_password,
        enabled_codecs=[models.Codec(mime=mime) for mime in ENABLED_CODECS],
    )


def participant_proto(participant: Participant) -> models.ParticipantInfo:
    return models.ParticipantInfo(
        sid=participant.sid,
        identity=participant.identity,
        state=int(participant.state),
        metadata=participant.metadata,
        joined_at=int(participant.joined_at),
        joined_at_ms=int(participant.joined_at * 1000),
        name=participant.name,
        permission=models.ParticipantPermission(**participant.permission),
        kind=int(participant.kind),
        attributes=participant.attributes,
        disconnect_reason=int(participant.disconnect_reason),
    )


def job_proto(job: Job, room: Room | None = None) -> agent.Job:
    return agent.Job(
        id=job.id,
        dispatch_id=job.dispatch_id,
        type=agent.JobType.JT_ROOM,
        room=room_proto(room) if room is not None else models.Room(name=job.room),
        agent_name=job.agent_name,
        metadata=job.metadata,
        deployment=job.deployment,
        state=agent.JobState(
            status=int(job.status),
            error=job.error,
            started_at=_ns(job.started_at),
            ended_at=_ns(job.ended_at),
            updated_at=_ns(job.updated_at),
            participant_identity=job.participant_identity,
            worker_id=job.worker_id,
        ),
    )


def dispatch_proto(dispatch: Dispatch, room: Room | None = None) -> agent_dispatch.AgentDispatch:
    return agent_dispatch.AgentDispatch(
        id=dispatch.id,
        agent_name=dispatch.agent_name,
        room=dispatch.room,
        metadata=dispatch.metadata,
        state=agent_dispatch.AgentDispatchState(
            jobs=[job_proto(job, room) for job in dispatch.jobs],
            created_at=_ns(dispatch.created_at),
        ),
    )


def agent_specs(agents: Iterable[room_pb.RoomAgentDispatch]) -> list[AgentSpec]:
    return [AgentSpec(agent_name=a.agent_name, metadata=a.metadata, deployment=a.deployment) for a in agents]


def room_config(message: room_pb.CreateRoomRequest | room_pb.RoomConfiguration) -> RoomConfig:
    return RoomConfig(
        empty_timeout=float(message.empty_timeout),
        departure_timeout=float(message.departure_timeout),
        max_participants=message.max_participants,
        metadata=message.metadata,
        agents=agent_specs(message.agents),
    )


def webhook_event(
    event: str, room: Room, participant: Participant | None, *, now: float
) -> webhook.WebhookEvent:
    message = webhook.WebhookEvent(event=event, room=room_proto(room), id=new_id("EV_"), created_at=int(now))
    if participant is not None:
        message.participant.CopyFrom(participant_proto(participant))
    return message
