from django.apps import AppConfig


class WatchAppConfig(AppConfig):
    name = "watch_app"
    verbose_name = "Alerts, workers and canaries"

    def ready(self) -> None:
        # Observes the reconcile and dispatch tasks' outcomes (Celery signals), so alerts need
        # no hook inside the dispatch lifecycle's code.
        from . import signals  # noqa: F401
