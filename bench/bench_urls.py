"""The portal's URLs plus `/bench/bare-token`: the floor a Python token endpoint can reach
in this server (same middleware, same workers), for bench/token_bench.py to compare with."""

import json

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from livekit.api import AccessToken, VideoGrants


@csrf_exempt
@require_POST
def bare_token(request: HttpRequest) -> JsonResponse:
    """Only what any token endpoint must do: read the body, sign a join token, answer."""
    body = json.loads(request.body)
    room = body.get("room_name", "bench-room")
    token = (
        AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_identity(body.get("participant_identity", "bench-user"))
        .with_grants(VideoGrants(room_join=True, room=room))
        .to_jwt()
    )
    return JsonResponse({"server_url": settings.PUBLIC_LIVEKIT_URL, "participant_token": token}, status=201)


urlpatterns = [
    path("bench/bare-token", bare_token),
    path("", include("dispatchportal.urls")),
]
