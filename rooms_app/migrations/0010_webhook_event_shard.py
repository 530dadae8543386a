"""Webhook events get the shard of their room, so several applications run at once.

The events still pending get their shard here (the applied ones keep 0: nothing reads it
again). The hash is the one `rooms_app.services.webhook_events.webhook_shard` uses, written
out: a migration must not change when that module does."""

import zlib

from django.db import migrations, models

SHARDS = 32


def pending_sharded(apps, schema_editor):
    event = apps.get_model("rooms_app", "WebhookEvent")
    for pk, room_name in event.objects.filter(applied_at__isnull=True).values_list("pk", "room_name"):
        event.objects.filter(pk=pk).update(shard=zlib.crc32(room_name.encode()) % SHARDS)


class Migration(migrations.Migration):
    dependencies = [
        ("rooms_app", "0009_tokenfact_room_name_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookevent",
            name="shard",
            field=models.PositiveSmallIntegerField(
                default=0,
                db_default=0,
                editable=False,
                help_text="Which application takes the event: all of one room's events share a shard.",
                verbose_name="shard",
            ),
        ),
        migrations.RunPython(pending_sharded, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("applied_at__isnull", True)),
                fields=["shard", "id"],
                name="webhook_event_pending_shard",
            ),
        ),
        migrations.RemoveIndex(
            model_name="webhookevent",
            name="webhook_event_pending",
        ),
    ]
