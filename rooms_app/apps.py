from django.apps import AppConfig


class RoomsAppConfig(AppConfig):
    name = "rooms_app"
    verbose_name = "Rooms and dispatches"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The services enqueue jobs through `services.jobs` and never import the tasks (which
        # import the services): the task objects are handed to them here, once.
        from agents_app.room_facts import room_facts_bind

        from . import services, tasks
        from .services import jobs

        jobs.tasks_bind(
            tasks=jobs.Tasks(
                dispatch_request=tasks.dispatch_request,
                dispatch_deadline=tasks.dispatch_deadline,
                dispatch_remove=tasks.dispatch_remove,
                dispatch_token_check=tasks.dispatch_token_check,
                token_facts_apply=tasks.token_facts_apply,
                participant_remove=tasks.participant_remove,
                webhook_events_apply=tasks.webhook_events_apply,
            )
        )
        # The token path (agents_app, the layer below) records its facts in the ledger through
        # the port it declares; the module itself is bound, so each call finds today's function.
        room_facts_bind(facts=services)
