"""Project errors and the one DRF exception handler that turns every error into JSON
`{"error", "detail"}` with the right status, so no client ever sees a 500 for bad input."""

from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ApplicationError(Exception):
    """An error a caller can act on; subclasses fix the status and the error code."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, detail: Any, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = {field: [detail]} if field else detail


class Forbidden(ApplicationError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


_CODES = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, ApplicationError):
        return Response({"error": exc.code, "detail": exc.detail}, status=exc.status_code)

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ParseError):
        error = "malformed_json"
    else:
        error = _CODES.get(response.status_code, "error")
    data = response.data
    if isinstance(data, dict) and set(data) == {"detail"}:
        data = data["detail"]
    response.data = {"error": error, "detail": data}
    return response


API_PREFIXES = ("/api/", "/livekit/")


def _json_error(request: Any, status_code: int) -> Any:
    """The `{error, detail}` answer for a failure no view turned into JSON itself."""
    from django.http import JsonResponse

    if status_code >= 500:
        request_id = getattr(request, "request_id", "")
        body = {
            "error": "server_error",
            "detail": "The portal failed on this request (logged"
            + (f" under request id {request_id}" if request_id else "")
            + "). Try again; if it keeps failing, give the operator that id.",
        }
    elif status_code == 404:
        body = {"error": "not_found", "detail": f"no such endpoint: {request.path}"}
    else:
        body = {"error": _CODES.get(status_code, "error"), "detail": HTTPStatus(status_code).phrase}
    return JsonResponse(body, status=status_code)


def page_not_found(request: Any, exception: Exception) -> Any:
    """Django's 404 for a URL no route matches: JSON under the API and webhook paths (their
    callers parse JSON), Django's own page elsewhere (admin)."""
    from django.views import defaults

    if request.path.startswith(API_PREFIXES):
        return _json_error(request, 404)
    return defaults.page_not_found(request, exception)


def server_error(request: Any) -> Any:
    """Django's 500 (any exception no view handled, the database gone mid-request included):
    JSON under the API and webhook paths, Django's own page elsewhere."""
    from django.views import defaults

    if request.path.startswith(API_PREFIXES):
        return _json_error(request, 500)
    return defaults.server_error(request)


class ApiJsonErrorsMiddleware:
    """Under /api/ and /livekit/ every failure is JSON `{error, detail}`, whatever produced
    it: with DEBUG on, Django answers an unhandled exception or an unrouted URL with its HTML
    debug page (the handlers above only apply with DEBUG off), and middleware may answer
    before any view. DRF's own answers are left alone (their data is already the project's
    JSON; a browser asking for HTML gets DRF's browsable rendering of it)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and request.path.startswith(API_PREFIXES)
            and not isinstance(response, Response)
            and "json" not in response.get("Content-Type", "")
        ):
            return _json_error(request, response.status_code)
        return response
