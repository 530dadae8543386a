"""`manage.py reconcile [--room NAME]... [--json]`: run one reconcile pass now and print
what it repaired (the same pass the periodic task runs)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rooms_app.reconcile import reconcile_run


class Command(BaseCommand):
    help = "Reconcile the dispatch ledger with LiveKit once (all rooms, or the rooms named)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--room", action="append", dest="rooms", metavar="NAME", help="Only this room; repeatable."
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, rooms: list[str] | None = None, **options: Any) -> None:
        report = reconcile_run(room_names=rooms)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        elif report.skipped:
            self.stdout.write("Another reconcile pass is running; nothing done.")
        else:
            self.stdout.write(
                f"{report.rooms_in_livekit} room(s) in LiveKit, {report.rooms_checked} checked in "
                f"{report.duration_s:.2f} s: {report.rooms_recorded} recorded, {report.rooms_closed} closed, "
                f"{report.agents_joined} agent(s) joined, {report.agents_left} left, {report.agents_adopted} "
                f"adopted, {report.dispatched} dispatched, {report.redispatched} re-dispatched, "
                f"{report.deadline_checks} deadline check(s) and {report.requeued} dispatch(es) re-queued."
            )
            for note in report.notes:
                self.stdout.write(f"  {note}")
        if report.error:
            raise CommandError(f"LiveKit unavailable: {report.error}")
