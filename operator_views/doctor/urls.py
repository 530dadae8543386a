"""Route of the dispatch doctor's API (full path; included at the site root before
`rooms_app.urls`)."""

from django.urls import path

from .apis import RoomDiagnosisApi

app_name = "doctor"
urlpatterns = [
    path("api/v1/rooms/<str:room_name>/diagnosis", RoomDiagnosisApi.as_view(), name="room-diagnosis"),
]
