import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from agents_app.models import Agent, ApiClient, DispatchRule
from agents_app.services import api_client_create


class Command(BaseCommand):
    help = "Load a demo agent, rule and API client, and an admin login; secrets are printed once."

    def handle(self, *args, **options):
        agent, _ = Agent.objects.get_or_create(
            agent_name="demo-agent",
            defaults={"display_name": "Demo agent", "default_metadata": {"greeting": "hello"}},
        )
        DispatchRule.objects.get_or_create(
            name="demo rooms get the demo agent",
            defaults={
                "agent": agent,
                "room_match_kind": "glob",
                "room_match_value": "demo-*",
                "metadata_template": {"room": "{{room_name}}", "user": "{{participant_identity}}"},
            },
        )
        lines = []
        if not ApiClient.objects.filter(name="demo").exists():
            _, key = api_client_create(
                name="demo",
                room_patterns=["demo-*"],
                agent_names=["demo-agent"],
                client_agents=True,
                room_name_template="demo-{{uuid}}",
            )
            lines.append(f"  API client 'demo' key: {key}")
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@example.com", password)
            lines.append(f"  Admin login:           admin / {password}")
        if lines:
            self.stdout.write("Demo set up. Shown only this once, copy them now:")
            self.stdout.write("\n".join(lines))
        else:
            self.stdout.write(
                "Demo already set up (secrets are shown once). New key: "
                "`.venv/bin/python manage.py create_api_client NAME --rooms 'demo-*'`; "
                "new password: `.venv/bin/python manage.py changepassword admin`."
            )
        self.stdout.write("Portal: http://127.0.0.1:8000/admin/  API docs: http://127.0.0.1:8000/api/docs/")
