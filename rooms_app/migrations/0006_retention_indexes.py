"""Indexes the retention sweep reads: finished rooms by when they finished, ended dispatches by
when they ended (dispatchportal/retention.py).

Built with CREATE INDEX CONCURRENTLY on PostgreSQL, so a deployment whose ledger is already
large keeps taking tokens and webhooks while the index builds; SQLite builds them plainly."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("rooms_app", "0005_dispatch_waiting_removed"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="dispatch",
            index=models.Index(
                condition=models.Q(("status__in", ("pending", "requested", "job_assigned", "agent_joined")), _negated=True),
                fields=["ended_at"],
                name="dispatch_ended",
            ),
        ),
        AddIndexConcurrentlyOnPostgres(
            model_name="room",
            index=models.Index(condition=models.Q(("status", "finished")), fields=["finished_at"], name="room_finished"),
        ),
    ]
