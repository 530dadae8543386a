from django.apps import AppConfig


class RoomsAppConfig(AppConfig):
    name = "rooms_app"
    verbose_name = "Rooms and dispatches"
    default_auto_field = "django.db.models.BigAutoField"
