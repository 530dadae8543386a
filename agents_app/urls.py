from django.urls import path

from .apis import ExplainApi, token_view

app_name = "agents"
urlpatterns = [
    path("token", token_view, name="token"),
    path("rules/explain", ExplainApi.as_view(), name="rules-explain"),
]
