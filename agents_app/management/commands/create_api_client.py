from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from agents_app.services import api_client_create
from dispatchportal.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create an API client and print its key (only the key, once) on stdout."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--rooms", action="append", default=[], metavar="GLOB", help="Allowed rooms; repeatable."
        )
        parser.add_argument(
            "--agents", action="append", default=[], metavar="NAME", help="Agents it may name; repeatable."
        )
        parser.add_argument(
            "--client-agents", action="store_true", help="May put its agents in room_config.agents."
        )
        parser.add_argument("--max-ttl", type=int, default=6 * 3600, metavar="SECONDS")

    def handle(self, *args, name, rooms, agents, client_agents, max_ttl, **options):
        try:
            _, key = api_client_create(
                name=name,
                room_patterns=rooms,
                agent_names=agents,
                client_agents=client_agents,
                max_ttl_s=max_ttl,
            )
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from None
        except ApplicationError as exc:
            raise CommandError(str(exc.detail)) from None
        self.stdout.write(key)
