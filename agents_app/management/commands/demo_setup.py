"""`manage.py demo_setup`: the demo agent, rule and API client, and an admin login, for `make run`.

It prints one box: where the portal is, the admin login and the demo client's key. The key and
the password exist only in this output (the database keeps digests), so `bin/run-portal` shows
the box once when it is printed and again at the end of start-up, where it does not scroll away.
Run again, it creates nothing and says how to get a new key or password.
"""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from agents_app.models import Agent, ApiClient, DispatchRule
from agents_app.services import api_client_create

DEMO_CLIENT = "demo"
DEMO_ROOMS = "demo-*"


def box(rows: list[tuple[str, str]], footer: list[str]) -> str:
    """Label/value rows and footer lines inside a frame, for a terminal."""
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {value}" for label, value in rows] + footer
    inner = max(len(line) for line in lines)
    return "\n".join(
        [
            "┌" + "─" * (inner + 2) + "┐",
            *(f"│ {line.ljust(inner)} │" for line in lines),
            "└" + "─" * (inner + 2) + "┘",
        ]
    )


class Command(BaseCommand):
    help = (
        "Load a demo agent, rule and API client, and an admin login; prints the key and login once, in a box."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the portal answers (for the box's links).",
        )

    def handle(self, *args, **options):
        base = options["base_url"].rstrip("/")
        agent, _ = Agent.objects.get_or_create(
            agent_name="demo-agent",
            defaults={"display_name": "Demo agent", "default_metadata": {"greeting": "hello"}},
        )
        DispatchRule.objects.get_or_create(
            name="demo rooms get the demo agent",
            defaults={
                "agent": agent,
                "room_match_kind": "glob",
                "room_match_value": DEMO_ROOMS,
                "metadata_template": {"room": "{{room_name}}", "user": "{{participant_identity}}"},
            },
        )
        shown_once = False
        footer = []
        if ApiClient.objects.filter(name=DEMO_CLIENT).exists():
            key_row = f"client '{DEMO_CLIENT}' (its key was shown on the first run)"
            footer.append(
                f"New key: .venv/bin/python manage.py create_api_client NAME --rooms '{DEMO_ROOMS}' --agents demo-agent"
            )
        else:
            _, key = api_client_create(
                name=DEMO_CLIENT,
                room_patterns=[DEMO_ROOMS],
                agent_names=["demo-agent"],
                client_agents=True,
                room_name_template="demo-{{uuid}}",
            )
            key_row = f"{key}   (client '{DEMO_CLIENT}': rooms {DEMO_ROOMS}, agent demo-agent)"
            shown_once = True
        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            login_row = "admin (its password was shown on the first run)"
            footer.append("New password: .venv/bin/python manage.py changepassword admin")
        else:
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@example.com", password)
            login_row = f"admin / {password}"
            shown_once = True
        rows = [
            ("Admin", f"{base}/admin/"),
            ("Login", login_row),
            ("API key", key_row),
            ("API docs", f"{base}/api/docs/"),
            ("Test call", f"{base}/admin/test-call/"),
        ]
        if shown_once:
            footer.append("Shown only in this run (the database keeps digests): copy them now.")
        self.stdout.write(box(rows, footer))
