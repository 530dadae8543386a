"""Create the periodic retention sweep (django-celery-beat), editable in admin afterwards:
every RETENTION_INTERVAL_S seconds (default 300)."""

from django.conf import settings
from django.db import migrations
from django.utils import timezone

TASK_NAME = "Delete rows past their retention"


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every = int(getattr(settings, "RETENTION_INTERVAL_S", 300))
    schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "retention.apply",
            "interval": schedule,
            "enabled": True,
            # A sweep that could not start within one interval is stale: the next one follows.
            "expire_seconds": every,
            "description": "Deletes finished rooms, ended dispatches, applied token facts, webhook "
            "events, canary runs and alert deliveries older than their RETENTION_*_DAYS setting, in "
            "small batches. Never a live room or dispatch.",
        },
    )
    # Tell a running beat to reload its schedule.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rooms_app", "0006_retention_indexes"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
