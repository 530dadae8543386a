"""Plain words for people: names, times and the printed diagnosis."""

from __future__ import annotations

from datetime import UTC, datetime

from .facts import BROKEN, OK, UNKNOWN, Diagnosis, agent_name_quoted

# --- wording --------------------------------------------------------------------------------


def moment_described(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "at an unknown time"
    seconds = (now - moment).total_seconds()
    stamp = moment.astimezone(UTC).strftime("%H:%M:%S UTC")
    if seconds < 0:
        return f"at {stamp}"
    if seconds < 90:
        ago = f"{seconds:.0f} s ago"
    elif seconds < 5400:
        ago = f"{seconds / 60:.0f} min ago"
    elif seconds < 172800:
        ago = f"{seconds / 3600:.0f} h ago"
    else:
        return f"on {moment:%Y-%m-%d %H:%M} UTC"
    return f"at {stamp} ({ago})"


def diagnosis_format(diagnosis: Diagnosis) -> str:
    """The doctor's answer for a terminal."""
    marks = {OK: "ok", BROKEN: "BROKEN", UNKNOWN: "unknown"}
    title = f"Doctor for room '{diagnosis.room_name}'"
    if diagnosis.agent is not None:
        title += f", agent {agent_name_quoted(diagnosis.agent)}"
    if diagnosis.identity is not None:
        title += f", identity '{diagnosis.identity}'"
    lines = [title, f"LiveKit: {diagnosis.livekit_url}", ""]
    first = diagnosis.first_broken
    for link in diagnosis.links:
        lines.append(f"{link.number}. [{marks[link.state]:>7}] {link.title}")
        if link.summary:
            lines.append(f"             {link.summary}")
        for detail in link.details:
            lines.append(f"             - {detail}")
        if link is first:
            lines.append(f"             cause: {link.cause}")
            lines.append(f"             fix:   {link.fix}")
    lines += ["", f"Verdict: {diagnosis.summary}"]
    return "\n".join(lines)
