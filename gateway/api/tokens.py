"""``/v1/tokens``: a caller's API tokens. A token is shown once, when it is created.

A caller can only hand a token permissions they hold themselves (a ``storage:read`` token
cannot mint a ``storage:write`` one). Admins (role and ``admin`` permission) may list and
revoke anyone's tokens (``?user=``) and create tokens for another user (``"user"``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gateway.api.common import Caller, gateway_of, get_caller, ok, read_json
from gateway.api.errors import ApiError, validation_error
from gateway.service.tokens import PERMISSIONS, TokenService, utc_expiry

DEFAULT_LIFETIME = timedelta(days=90)


def _service(request: Request) -> TokenService:
    found = getattr(gateway_of(request), "tokens", None)
    return found if isinstance(found, TokenService) else TokenService(gateway_of(request).ctx)


def _is_admin(caller: Caller) -> bool:
    return caller.principal.is_admin and caller.has("admin")


def _expiry(body: dict[str, Any]) -> datetime | None:
    """Absent: the default lifetime; ``null``: never expires; else an ISO 8601 time."""
    if "expires_at" not in body:
        return datetime.now(UTC) + DEFAULT_LIFETIME
    raw = body["expires_at"]
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise validation_error("expires_at must be an ISO 8601 date-time or null",
                               field="expires_at")
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise validation_error(f"expires_at is not an ISO 8601 date-time: {raw!r}",
                               field="expires_at") from None
    try:
        return utc_expiry(at)
    except ValueError as exc:
        raise validation_error(str(exc), field="expires_at") from None


async def create_token(request: Request) -> JSONResponse:
    caller = await get_caller(request)
    body = await read_json(request)
    name = body.get("name")
    permissions = body.get("permissions")
    if not isinstance(name, str):
        raise validation_error("name is required", field="name")
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise validation_error("permissions must be a list of strings", field="permissions")
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown:
        raise validation_error(f"unknown permission(s) {', '.join(unknown)}; choose from "
                               f"{', '.join(PERMISSIONS)}", field="permissions")
    owner = caller.principal.name
    requested_user = body.get("user")
    if requested_user is not None and requested_user != owner:
        if not _is_admin(caller) or not isinstance(requested_user, str):
            raise ApiError(403, "FORBIDDEN", "Only admins create tokens for other users")
        owner = requested_user
    else:
        beyond = sorted(set(permissions) - caller.permissions)
        if beyond:
            raise ApiError(403, "FORBIDDEN", "A token cannot have permissions its creator "
                           "lacks", {"permissions": beyond})
    expires_at = _expiry(body)
    try:
        info, token = await _service(request).create(owner, name, permissions, expires_at)
    except ValueError as exc:
        raise validation_error(str(exc)) from None
    return ok({**info.as_dict(), "token": token}, status=201,
              message="Store the token now: it is not shown again",
              headers={"Cache-Control": "no-store"})


async def list_tokens(request: Request) -> JSONResponse:
    caller = await get_caller(request)
    user = request.query_params.get("user") or caller.principal.name
    if user != caller.principal.name and not _is_admin(caller):
        raise ApiError(403, "FORBIDDEN", "Only admins list other users' tokens")
    return ok([t.as_dict() for t in await _service(request).list(user)])


async def revoke_token(request: Request) -> JSONResponse:
    caller = await get_caller(request)
    token_id = request.path_params["token_id"]
    service = _service(request)
    if not _is_admin(caller):
        own = {t.id for t in await service.list(caller.principal.name)}
        if token_id not in own:  # someone else's and unknown tokens look the same
            raise ApiError(404, "NOT_FOUND", "Token not found")
    try:
        await service.revoke(token_id)
    except ValueError:
        raise ApiError(404, "NOT_FOUND", "Token not found or already revoked") from None
    return ok({"id": token_id, "revoked": True}, message="Token revoked")


routes: list[BaseRoute] = [
    Route("/v1/tokens", create_token, methods=["POST"]),
    Route("/v1/tokens", list_tokens, methods=["GET"]),
    Route("/v1/tokens/{token_id}", revoke_token, methods=["DELETE"]),
]
