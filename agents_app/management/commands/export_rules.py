import json

from django.core.management.base import BaseCommand

from agents_app.transfer import rules_export


class Command(BaseCommand):
    help = "Print agents and dispatch rules as JSON (manage.py export_rules > rules.json)."

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(rules_export(), indent=2, sort_keys=False))
