"""The project's routes plus views that raise, for the tests of what a failure answers."""

from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from dispatchportal.urls import handler404, handler500
from dispatchportal.urls import urlpatterns as project_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]


class RaisingApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in a DRF view")


def raising_view(request):  # type: ignore[no-untyped-def]
    raise RuntimeError("a bug in a plain Django view")


urlpatterns = [
    path("api/v1/_raise", RaisingApi.as_view()),
    path("livekit/_raise", raising_view),
    path("admin-raise/", raising_view),
    *project_urlpatterns,
]
