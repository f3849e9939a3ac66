"""``/v1/auth``: log in (password or S3 key pair) for a bearer session, log out, who am I."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gateway.api.common import gateway_of, get_caller, ok, read_json
from gateway.api.errors import unauthorized, validation_error
from gateway.service.sessions import SESSION_PREFIX


def _string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None


async def login(request: Request) -> JSONResponse:
    body = await read_json(request, allow_empty=True)
    sessions = gateway_of(request).sessions
    username, password = _string(body, "username"), _string(body, "password")
    access_key, secret_key = _string(body, "access_key"), _string(body, "secret_key")
    if username is not None and password is not None:
        opened = await sessions.login_password(username, password)
    elif access_key is not None and secret_key is not None:
        opened = await sessions.login_keys(access_key, secret_key)
    else:
        raise unauthorized("Send {\"username\", \"password\"} or "
                           "{\"access_key\", \"secret_key\"}")
    if opened is None:
        raise unauthorized("Invalid credentials")
    token, expires_at = opened
    return ok({"token": token, "token_type": "Bearer", "expires_at": expires_at.isoformat()},
              headers={"Cache-Control": "no-store"})


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def logout(request: Request) -> JSONResponse:
    caller = await get_caller(request)
    token = _bearer(request)
    if caller.via != "session" or not token.startswith(SESSION_PREFIX):
        raise validation_error("Only a login session can log out; API tokens are revoked "
                               "with DELETE /api/v1/tokens/{id}")
    await gateway_of(request).sessions.logout(token)
    return ok({"logged_out": True}, message="Logged out")


async def me(request: Request) -> JSONResponse:
    caller = await get_caller(request)
    principal = caller.principal
    groups = await gateway_of(request).groups.groups_of(principal.user_id)
    return ok({"id": principal.user_id, "username": principal.name, "role": principal.role,
               "groups": groups, "permissions": sorted(caller.permissions),
               "auth": caller.via})


routes: list[BaseRoute] = [
    Route("/v1/auth/login", login, methods=["POST"]),
    Route("/v1/auth/logout", logout, methods=["POST"]),
    Route("/v1/auth/me", me, methods=["GET"]),
]
