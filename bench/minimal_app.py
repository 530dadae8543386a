"""The token bench's reference: the least a Django token endpoint can be. No middleware, no
installed apps, no database: it parses LiveKit's standard token body and mints the same token
the portal mints for it (identity, name, room, and the agents in `BENCH_MINIMAL_AGENTS`, the
portal's own answer for the bench's request) with livekit-api's `AccessToken`.

    gunicorn bench.minimal_app --workers 2   (bench/token_bench.py starts it)
"""

from __future__ import annotations

import json
import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-minimal-app-not-a-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATABASES={},
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from livekit.api import AccessToken, RoomAgentDispatch, RoomConfiguration, VideoGrants  # noqa: E402

API_KEY = os.environ["LIVEKIT_API_KEY"]
API_SECRET = os.environ["LIVEKIT_API_SECRET"]
SERVER_URL = os.environ.get("PUBLIC_LIVEKIT_URL", "ws://127.0.0.1:7880")
AGENTS = [
    RoomAgentDispatch(agent_name=a["agent_name"], metadata=a["metadata"])
    for a in json.loads(os.environ.get("BENCH_MINIMAL_AGENTS", "[]"))
]


def token(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    room = body["room_name"]
    minted = (
        AccessToken(API_KEY, API_SECRET)
        .with_identity(body.get("participant_identity", ""))
        .with_name(body.get("participant_name", ""))
        .with_grants(VideoGrants(room_join=True, room=room))
    )
    if AGENTS:
        minted.with_room_config(RoomConfiguration(agents=AGENTS))
    return JsonResponse({"server_url": SERVER_URL, "participant_token": minted.to_jwt()}, status=201)


urlpatterns = [path("token", token)]
application = get_wsgi_application()
