"""Token facts' room_name keeps its equality index and loses the LIKE one.

`db_index=True` on a CharField gives PostgreSQL two indexes (the plain one and a
`varchar_pattern_ops` twin for LIKE 'prefix%'); nothing looks token facts up by prefix, and
every token that carries agents pays for each index on its INSERT. On PostgreSQL the plain
index is renamed in place (no rebuild: the table takes a row per token and must not be locked
while an index is built); elsewhere it is rebuilt under its new name."""

from django.db import migrations, models

OLD = "rooms_app_tokenfact_room_name_5492ad3b"
NEW = "tokenfact_room_name"


def _fields(apps):
    model = apps.get_model("rooms_app", "TokenFact")
    indexed = model._meta.get_field("room_name")
    plain = indexed.clone()
    plain.db_index = False
    plain.set_attributes_from_name("room_name")
    plain.model = model
    return model, indexed, plain


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {OLD}_like")
        schema_editor.execute(f"ALTER INDEX IF EXISTS {OLD} RENAME TO {NEW}")
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {NEW} ON rooms_app_tokenfact (room_name)")
        return
    model, indexed, plain = _fields(apps)
    schema_editor.alter_field(model, indexed, plain)
    schema_editor.add_index(model, models.Index(fields=["room_name"], name=NEW))


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER INDEX IF EXISTS {NEW} RENAME TO {OLD}")
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {OLD}_like ON rooms_app_tokenfact (room_name varchar_pattern_ops)"
        )
        return
    model, indexed, plain = _fields(apps)
    schema_editor.remove_index(model, models.Index(fields=["room_name"], name=NEW))
    schema_editor.alter_field(model, plain, indexed)


class Migration(migrations.Migration):
    dependencies = [
        ("rooms_app", "0008_webhook_event_queue"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="tokenfact",
                    name="room_name",
                    field=models.CharField(help_text="e.g. 'interview-42'.", max_length=256, verbose_name="room"),
                ),
                migrations.AddIndex(
                    model_name="tokenfact",
                    index=models.Index(fields=["room_name"], name=NEW),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
