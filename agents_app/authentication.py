"""API-key authentication: `Authorization: Bearer dpk_...` names an ApiClient."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from .selectors import EVERYTHING, ClientScope, Config, Scope, config_get, key_digest


class ClientPrincipal:
    """The request.user of a key-authenticated request."""

    is_authenticated = True
    is_staff = False
    is_active = True

    def __init__(self, client: ClientScope, config: Config) -> None:
        self.client = client
        self.config = config  # the configuration this request was authenticated against

    def __str__(self) -> str:
        return f"api client {self.client.name}"


class ApiClientAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise exceptions.AuthenticationFailed("Authorization must be 'Bearer <client key>'.")
        config = config_get()
        client = config.clients.get(key_digest(key))
        if client is None:
            raise exceptions.AuthenticationFailed("Unknown API key.")
        if not client.enabled:
            raise exceptions.AuthenticationFailed("This API client is disabled.")
        return ClientPrincipal(client, config), client

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class IsApiClient(permissions.BasePermission):
    message = "This endpoint needs an API client key: 'Authorization: Bearer dpk_...'."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ClientScope)


class IsApiClientOrStaffWith(permissions.BasePermission):
    """A client key (scoped by `request_scope`), or a staff session holding the Django
    permissions the view names per method in `staff_permissions`: the API grants staff what
    the admin grants them. A superuser has every permission."""

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ClientScope):
            return True
        user = request.user
        if not (user and user.is_authenticated and user.is_staff and user.is_active):
            self.message = "Needs an API client key or a staff session."
            return False
        needed = staff_permissions_needed(view, request.method)
        missing = [p for p in needed if not user.has_perm(p)]
        if missing:
            self.message = f"Your staff account lacks the permission {', '.join(missing)}."
            return False
        return True


def staff_permissions_needed(view, method: str) -> tuple[str, ...]:
    """The permissions `view.staff_permissions` names for `method` (OPTIONS/HEAD as GET; a
    method the view does not serve needs none and is answered 405)."""
    method = "GET" if method in ("HEAD", "OPTIONS") else method
    return tuple(view.staff_permissions.get(method, ()))


def request_scope(request) -> Scope:
    """The caller's scope: a client key's, or everything for a staff session that passed
    `IsApiClientOrStaffWith` (or a superuser)."""
    auth = getattr(request, "auth", None)
    return Scope(auth) if isinstance(auth, ClientScope) else EVERYTHING


class ApiClientKeyScheme(OpenApiAuthenticationExtension):
    """Describes the key in the OpenAPI schema (Authorize: `Bearer dpk_...`)."""

    target_class = ApiClientAuthentication
    name = "apiClientKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "dpk_… API client key"}
