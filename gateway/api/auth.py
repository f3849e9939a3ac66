"""Who is calling the JSON API, and what may they do.

Credentials, in this order:

- ``Authorization: Bearer <token>``: an API token (``gwt_…``, raw or Base64) or a login
  session token (``gateway.sessions.authenticate(token) -> Principal | None``);
- ``X-Api-Key: <Base64 of an API token>`` (the raw token is accepted too).

A :class:`Caller` is the principal plus its permissions: an API token has the permissions
it was created with; a session has every permission its user's role allows
(:data:`ROLE_PERMISSIONS`). Tenant rules (whose buckets, which objects) stay in the service
layer: handlers pass ``caller.principal`` to the same service functions the S3 handlers
call, so both protocols deny the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from gateway.api.errors import GATEWAY_SCOPE_KEY, ApiError, unauthorized
from gateway.service.tokens import TOKEN_PREFIX, TokenService
from gateway.types import Principal

if TYPE_CHECKING:
    from gateway.core import Gateway

MEMBER_PERMISSIONS = frozenset({"storage:read", "storage:write", "bots:read", "bots:write"})
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "member": MEMBER_PERMISSIONS,
    "admin": MEMBER_PERMISSIONS | {"admin"},
}
_CALLER_SCOPE_KEY = "gateway.api.caller"


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    permissions: frozenset[str]
    #: How they authenticated: "session" or "token".
    via: str

    def has(self, permission: str) -> bool:
        return permission in self.permissions


def _tokens(gw: Gateway) -> TokenService:
    found = getattr(gw, "tokens", None)
    if isinstance(found, TokenService):
        return found
    return TokenService(gw.ctx)  # stateless: cheap to make when core has none


async def _from_bearer(gw: Gateway, token: str) -> Caller | None:
    if not token.startswith(TOKEN_PREFIX):
        sessions: Any = getattr(gw, "sessions", None)
        if sessions is not None:
            principal = await sessions.authenticate(token)
            if principal is not None:
                return Caller(principal, ROLE_PERMISSIONS.get(principal.role, frozenset()),
                              "session")
    found = await _tokens(gw).authenticate(token)  # raw or Base64 API token
    return Caller(found[0], found[1], "token") if found is not None else None


async def authenticate(request: Request) -> Caller | None:
    """The caller, or None when the request carries no credentials at all. Credentials
    that are present but unknown, expired or revoked are a 401 here."""
    gw: Gateway = request.scope[GATEWAY_SCOPE_KEY]
    authorization = request.headers.get("authorization")
    api_key = request.headers.get("x-api-key")
    if authorization is None and api_key is None:
        return None
    caller: Caller | None = None
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("The Authorization header must be 'Bearer <token>'")
        caller = await _from_bearer(gw, token)
    elif api_key is not None and api_key.strip():
        found = await _tokens(gw).authenticate(api_key)
        caller = Caller(found[0], found[1], "token") if found is not None else None
    if caller is None:
        raise unauthorized("Invalid, expired or revoked credentials")
    return caller


async def get_caller(request: Request) -> Caller:
    """The authenticated caller (cached on the request); 401 without credentials."""
    cached = request.scope.get(_CALLER_SCOPE_KEY)
    if isinstance(cached, Caller):
        return cached
    caller = await authenticate(request)
    if caller is None:
        raise unauthorized("Authentication required")
    request.scope[_CALLER_SCOPE_KEY] = caller
    return caller


def require(caller: Caller, permission: str) -> None:
    """403 unless the caller holds ``permission``."""
    if not caller.has(permission):
        raise ApiError(403, "FORBIDDEN", f"This credential lacks the {permission} permission",
                       {"required": permission})


async def require_caller(request: Request, permission: str) -> Caller:
    """The usual first line of a handler: authenticate, then check one permission."""
    caller = await get_caller(request)
    require(caller, permission)
    return caller


async def require_admin(request: Request) -> Caller:
    """Administration: the admin role *and* a credential holding the admin permission."""
    caller = await require_caller(request, "admin")
    if not caller.principal.is_admin:
        raise ApiError(403, "FORBIDDEN", "Administrators only")
    return caller
