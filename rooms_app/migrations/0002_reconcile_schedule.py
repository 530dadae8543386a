"""Create the periodic reconcile task (django-celery-beat), editable in admin afterwards:
every RECONCILE_INTERVAL_S seconds (default 30)."""

from django.conf import settings
from django.db import migrations
from django.utils import timezone

TASK_NAME = "Reconcile rooms and dispatches with LiveKit"


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every = int(getattr(settings, "RECONCILE_INTERVAL_S", 30))
    schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "rooms.reconcile",
            "interval": schedule,
            "enabled": True,
            # A pass that could not start within one interval is stale: the next one follows.
            "expire_seconds": every,
            "description": "Marks agents joined or left, re-dispatches, applies explicit rules to "
            "rooms that lack them, closes rows of rooms that are gone. One pass at a time.",
        },
    )
    # Tell a running beat to reload its schedule.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("rooms_app", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
