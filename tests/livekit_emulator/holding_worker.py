"""A real livekit-agents 1.8.9 worker whose jobs hold without joining their room, for the
emulator's worker-protocol tests: a job stays running until the server terminates it or the
worker goes, with no agent participant (whose leaving would end the job) and no WebRTC
connection to set up, which keeps the module's many jobs cheap.

Configured like tests/agent_worker.py (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET,
AGENT_NAME) and started by the same `tests.real_livekit.start_worker`; prints the same
`AGENT_WORKER_REGISTERED <worker id> <health port>` line. Each job logs
`HOLDING_JOB <job id>` when it starts and `JOB_ENDED <job id>` when it is shut down.
"""

from __future__ import annotations

import asyncio
import os
import sys

os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # see tests/agent_worker.py

from livekit.agents import AgentServer, JobContext, JobExecutorType, cli  # noqa: E402

server = AgentServer(
    load_fnc=lambda: 0.0,
    load_threshold=float("inf"),
    host="127.0.0.1",
    port=0,
    num_idle_processes=0,
    job_executor_type=JobExecutorType.THREAD,  # cheap on a 2-core machine
    drain_timeout=2,
    http_proxy=None,
)


@server.rtc_session(agent_name=os.environ.get("AGENT_NAME", ""))
async def entrypoint(ctx: JobContext) -> None:
    print(f"HOLDING_JOB {ctx.job.id}", flush=True)

    async def ended(reason: str) -> None:
        print(f"JOB_ENDED {ctx.job.id} {reason}", flush=True)

    ctx.add_shutdown_callback(ended)
    await asyncio.Event().wait()  # until the job is shut down (termination, worker exit)


def on_registered(worker_id: str, _server_info: object) -> None:
    print(f"AGENT_WORKER_REGISTERED {worker_id} {server.worker_info.http_port}", flush=True)


server.on("worker_registered", on_registered)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "start"]
    cli.run_app(server)
