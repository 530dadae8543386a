from django.apps import AppConfig


class WatchAppConfig(AppConfig):
    name = "watch_app"
    verbose_name = "Alerts, workers and canaries"

    def ready(self) -> None:
        # `signals` observes the reconcile and dispatch tasks' outcomes (Celery signals), so
        # alerts need no hook inside the dispatch lifecycle's code. Alerts send deliveries
        # through the task bound here, without importing the tasks module (which imports them).
        from . import alerts, signals, tasks  # noqa: F401

        alerts.deliver_send_bind(send=tasks.alert_deliver.delay)
