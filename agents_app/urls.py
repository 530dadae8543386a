from django.urls import path

from .apis import ExplainApi, TokenApi

app_name = "agents"
urlpatterns = [
    path("token", TokenApi.as_view(), name="token"),
    path("rules/explain", ExplainApi.as_view(), name="rules-explain"),
]
