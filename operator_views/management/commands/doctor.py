"""`manage.py doctor ROOM [--agent NAME] [--identity ID] [--json]`: why is there no agent?

Walks the dispatch chain for one room and prints each link's state, with the cause and the
fix at the first broken one. Exit status: 0 healthy (or nothing broken yet), 1 a link is
broken, 2 LiveKit cannot be asked (unreachable or refusing the credentials).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from operator_views.doctor import diagnosis_format, room_diagnose


class Command(BaseCommand):
    help = "Diagnose why an agent is (not) in a LiveKit room: each link of the dispatch chain, ok or broken."

    # The exit status is the answer; Django's system checks would only slow a shell loop.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("room", help="the LiveKit room name, e.g. support-42")
        parser.add_argument("--agent", help="only this agent name (the empty string is the unnamed agent)")
        parser.add_argument("--identity", help="evaluate the rules for this participant identity")
        parser.add_argument("--json", action="store_true", help="print the diagnosis as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        diagnosis = room_diagnose(
            room_name=options["room"], agent_name=options["agent"], identity=options["identity"]
        )
        if options["json"]:
            self.stdout.write(json.dumps(diagnosis.as_dict(), indent=2))
        else:
            self.stdout.write(diagnosis_format(diagnosis))
        # Flushed before exiting: sys.exit skips Django's own end-of-command handling.
        self.stdout.flush()
        if diagnosis.exit_code:
            sys.exit(diagnosis.exit_code)
