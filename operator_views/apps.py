from django.apps import AppConfig


class OperatorViewsConfig(AppConfig):
    name = "operator_views"
    verbose_name = "Operator views"
