"""Every change to agents, rules or clients moves the rule-set version, so each token worker
reloads its compiled rules and client keys (bulk admin actions bump it themselves)."""

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from .models import Agent, ApiClient, DispatchRule


@receiver(post_save, sender=Agent)
@receiver(post_save, sender=DispatchRule)
@receiver(post_save, sender=ApiClient)
@receiver(post_delete, sender=Agent)
@receiver(post_delete, sender=DispatchRule)
@receiver(post_delete, sender=ApiClient)
@receiver(m2m_changed, sender=ApiClient.agents.through)
def _config_changed(**kwargs: object) -> None:
    from .services import ruleset_bump

    ruleset_bump()
