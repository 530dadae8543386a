"""The admin pages of every app's models (Django's admin autodiscovery imports this module)."""

from . import agents, rooms, watch  # noqa: F401  (each registers its models' admins)
