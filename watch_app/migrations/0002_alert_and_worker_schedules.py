"""Create the periodic alert checks and worker health polls (django-celery-beat), editable in
admin afterwards."""

from django.conf import settings
from django.db import migrations
from django.utils import timezone

TASKS = (
    ("Alert checks", "alerts.evaluate", "ALERTS_EVALUATE_INTERVAL_S", 10,
     "Raises and resolves incidents: dispatches that gave up, LiveKit down, reconcile failing, canaries."),
    ("Worker health polls", "workers.poll", "WORKER_POLL_INTERVAL_S", 15,
     "Reads every registered worker health URL (/ and /worker): load, active jobs."),
)


def create(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    for name, task, setting, default, description in TASKS:
        every = int(getattr(settings, setting, default))
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        PeriodicTask.objects.get_or_create(
            name=name,
            defaults={"task": task, "interval": schedule, "enabled": True, "expire_seconds": every,
                      "description": description},
        )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[t[0] for t in TASKS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("watch_app", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create, remove)]
