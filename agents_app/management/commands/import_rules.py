import json

from django.core.management.base import BaseCommand, CommandError

from agents_app.transfer import ImportError_, rules_import


class Command(BaseCommand):
    help = "Create or update agents and rules from a JSON file, by name. --dry-run prints the diff only."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--dry-run", action="store_true", help="Print the diff, change nothing.")
        parser.add_argument("--prune", action="store_true", help="Delete rules that are not in the file.")

    def handle(self, *args, path, dry_run, prune, **options):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None
        try:
            lines = rules_import(data, dry_run=dry_run, prune=prune)
        except ImportError_ as exc:
            raise CommandError(str(exc)) from None
        for line in lines:
            self.stdout.write(line)
        verb = "would change" if dry_run else "changed"
        self.stdout.write(f"{verb} {len(lines)} item(s)" if lines else "no changes")
