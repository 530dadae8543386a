"""A real livekit-agents 1.8.9 worker for tests and `make run`, configured from its environment.

    LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET   the server (read by livekit-agents)
    AGENT_NAME        the name it registers with ("" registers for automatic dispatch)
    AGENT_BEHAVIOR    what each job does:
                        accept  join the room (ctx.connect()) and stay until the room ends
                        raise   raise in the entrypoint
                        exit    end the job process at once (os._exit(1)) in the entrypoint
                        publish join, then publish a silent audio track at once: LiveKit
                                tells others about a participant that publishes nothing
                                only on its ~3 s batch tick, about a publisher at once, so
                                latency measurements ("agent visible") use this
                        speak   as publish, but the track carries a 440 Hz tone: LiveKit
                                and a listening browser hear the agent speak
                        slow    wait AGENT_DELAY_S before accepting, then as accept
                        coldstart  accept at once, but each job's process spends
                                AGENT_DELAY_S in its setup (prewarm) before the entrypoint
                                runs: no idle process is kept, so every job waits for a
                                cold process, as a slow model load does
    AGENT_DELAY_S     seconds for `slow` (default 3)
    AGENT_DRAIN_TIMEOUT_S  on SIGTERM, how long running jobs may go on (default 10)
    AGENT_MAX_RETRY   how many times the worker tries to reconnect to LiveKit before it gives up
                      and exits (livekit-agents' default 16, about two minutes): a supervised
                      worker in production is restarted, which a higher number stands in for
    AGENT_EXECUTOR    `process` (default, as in production) or `thread`: jobs as threads of the
                      worker, for load tests that run dozens of jobs on a 2-core machine

It prints `AGENT_WORKER_REGISTERED <worker id> <health port>` once the server has registered
it (about 3 s after start); tests/real_livekit.py waits for that line. Never overloaded: a busy
test machine must not make it reject jobs (load 0, no threshold). Its health server
(`/` and `/worker`) listens on 127.0.0.1 on a free port, not on all interfaces on 8081.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import time
from array import array

# livekit-agents empties PROMETHEUS_MULTIPROC_DIR when the worker starts (worker.py, "cleaning
# prometheus multiprocess directory"): inherited from the portal or the test run, it would
# delete their metrics files. This worker keeps no metrics files; drop it before the import.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

from livekit import rtc  # noqa: E402
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest, cli  # noqa: E402

AGENT_NAME = os.environ.get("AGENT_NAME", "")
BEHAVIOR = os.environ.get("AGENT_BEHAVIOR", "accept")
DELAY_S = float(os.environ.get("AGENT_DELAY_S", "3"))
EXECUTOR = JobExecutorType(os.environ.get("AGENT_EXECUTOR", "process"))
SAMPLE_RATE = 48000

logger = logging.getLogger("agent_worker")


def no_load() -> float:
    return 0.0


def cold_setup(_proc: JobProcess) -> None:
    time.sleep(DELAY_S)  # a slow prewarm: the job process is busy before its job can start


server = AgentServer(
    load_fnc=no_load,
    load_threshold=float("inf"),
    host="127.0.0.1",
    port=0,
    # One warm job process: a job starts without forking under load (none for coldstart).
    num_idle_processes=0 if BEHAVIOR == "coldstart" else 1,
    setup_fnc=cold_setup if BEHAVIOR == "coldstart" else None,
    drain_timeout=int(os.environ.get("AGENT_DRAIN_TIMEOUT_S", "10")),  # SIGTERM: jobs get this long
    job_executor_type=EXECUTOR,
    http_proxy=None,  # everything is on loopback
    max_retry=int(os.environ.get("AGENT_MAX_RETRY", "16")),
)


async def on_request(request: JobRequest) -> None:
    if BEHAVIOR == "slow":
        await asyncio.sleep(DELAY_S)
    await request.accept()


@server.rtc_session(agent_name=AGENT_NAME, on_request=on_request)
async def entrypoint(ctx: JobContext) -> None:
    logger.info("job %s for room %s: %s", ctx.job.id, ctx.job.room.name, BEHAVIOR)
    if BEHAVIOR == "raise":
        raise RuntimeError(f"agent_worker: the entrypoint raised (job {ctx.job.id})")
    if BEHAVIOR == "exit":
        os._exit(1)
    await ctx.connect()
    logger.info("job %s joined room %s as %s", ctx.job.id, ctx.room.name, ctx.room.local_participant.identity)
    if BEHAVIOR in ("publish", "speak"):
        await _publish_audio(ctx, tone=BEHAVIOR == "speak")


async def _publish_audio(ctx: JobContext, *, tone: bool) -> None:
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("tone" if tone else "silence", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    # Frames from the start: the server learns of the track from the publish request, but the
    # track is a live one (as a real agent's voice) only once media flows.
    feeding = asyncio.create_task(_feed_tone(source) if tone else _feed_silence(source))

    async def stop_feeding() -> None:
        feeding.cancel()

    ctx.add_shutdown_callback(stop_feeding)
    await ctx.room.local_participant.publish_track(track, options)
    logger.info("job %s published an audio track (%s)", ctx.job.id, "tone" if tone else "silence")


async def _feed_silence(source: rtc.AudioSource) -> None:
    frame = rtc.AudioFrame.create(SAMPLE_RATE, 1, SAMPLE_RATE // 100)  # 10 ms of zeros
    while True:
        await source.capture_frame(frame)  # paced by the source's queue


async def _feed_tone(source: rtc.AudioSource) -> None:
    """440 Hz at a third of full scale, in 10 ms frames, without end (one second of it is
    computed once: 440 whole periods, so it loops without a click)."""
    per_frame = SAMPLE_RATE // 100
    second = memoryview(
        array("h", (int(10000 * math.sin(2 * math.pi * 440 * n / SAMPLE_RATE)) for n in range(SAMPLE_RATE)))
    )
    position = 0
    while True:
        frame = rtc.AudioFrame.create(SAMPLE_RATE, 1, per_frame)
        frame.data[:] = second[position : position + per_frame]
        position = (position + per_frame) % SAMPLE_RATE
        await source.capture_frame(frame)  # paced by the source's queue


def on_registered(worker_id: str, _server_info: object) -> None:
    print(f"AGENT_WORKER_REGISTERED {worker_id} {server.worker_info.http_port}", flush=True)


server.on("worker_registered", on_registered)


if __name__ == "__main__":
    if BEHAVIOR not in ("accept", "publish", "speak", "raise", "exit", "slow", "coldstart"):
        sys.exit(
            f"AGENT_BEHAVIOR must be accept, publish, speak, raise, exit, slow or coldstart, not {BEHAVIOR!r}"
        )
    sys.argv = [sys.argv[0], "start"]
    cli.run_app(server)
