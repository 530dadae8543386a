"""Routes of the dispatch lifecycle, with full paths (included at the site root)."""

from django.urls import path

from .apis import DispatchCreateApi, DispatchDetailApi, LiveKitWebhookApi, RoomDetailApi

app_name = "rooms"
urlpatterns = [
    path("api/v1/dispatches", DispatchCreateApi.as_view(), name="dispatch-create"),
    path("api/v1/dispatches/<str:dispatch_id>", DispatchDetailApi.as_view(), name="dispatch-detail"),
    path("api/v1/rooms/<str:room_name>", RoomDetailApi.as_view(), name="room-detail"),
    path("livekit/webhook", LiveKitWebhookApi.as_view(), name="livekit-webhook"),
]
