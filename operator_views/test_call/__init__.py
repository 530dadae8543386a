"""The test call: a staff page that mints a token through the portal's token path, joins the
room with LiveKit's browser SDK and shows the agent arrive (docs/test-call.md)."""

from .views import TestCallRoomApi, TestCallTokenApi, test_call_view

__all__ = ["TestCallRoomApi", "TestCallTokenApi", "test_call_view"]
