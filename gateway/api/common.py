"""What every API handler uses.

A handler is a Starlette endpoint ``async def handler(request: Request) -> Response``;
route modules export ``routes: list[BaseRoute]`` with paths below ``/api`` (``/v1/…``).

- ``gateway_of(request)``: the running :class:`~gateway.core.Gateway` (its services:
  ``accounts``, ``buckets``, ``objects``, ``multipart``, ``tokens`` …). The API app puts it in
  the request scope before routing; it is never None inside a handler.
- ``await require_caller(request, "storage:write")`` (or ``get_caller`` then ``require``):
  who is calling (:class:`Caller`: ``principal``, ``permissions``); 401 / 403 otherwise.
- ``await read_json(request)``: the JSON object body (size-capped, content type checked);
  400 ``VALIDATION_ERROR`` when malformed.
- ``ok(data, status=200, message=None)``: the envelope ``{"success": true, "data": …}``.
- Errors: raise :class:`~gateway.errors.GatewayError` (service errors) or
  :class:`~gateway.api.errors.ApiError`; the API app renders them, and any other exception
  becomes a logged 500 ``SERVER_ERROR`` naming the request id.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.auth import Caller, get_caller, require, require_admin, require_caller
from gateway.api.errors import (
    GATEWAY_SCOPE_KEY,
    REQUEST_ID_SCOPE_KEY,
    RESOURCE_SCOPE_KEY,
    ApiError,
    validation_error,
)
from gateway.types import MAX_SQL_INT

if TYPE_CHECKING:
    from gateway.core import Gateway

MAX_JSON_BODY = 1024 * 1024

__all__ = [
    "MAX_JSON_BODY", "Caller", "gateway_of", "get_caller", "int_query", "ok", "read_json",
    "request_id", "require", "require_admin", "require_caller", "set_resource",
]


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.scope[GATEWAY_SCOPE_KEY]
    return gw


def request_id(request: Request) -> str:
    return str(request.scope.get(REQUEST_ID_SCOPE_KEY, ""))


def set_resource(request: Request, bucket: str | None, key: str | None = None) -> None:
    """Name what the request is about, for the storage error shape (``resource``)."""
    request.scope[RESOURCE_SCOPE_KEY] = {
        name: value for name, value in (("bucket", bucket), ("key", key)) if value}


def ok(data: Any, status: int = 200, message: str | None = None,
       headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "data": data}
    if message is not None:
        body["message"] = message
    return JSONResponse(body, status_code=status, headers=headers)


async def read_json(request: Request, *, limit: int = MAX_JSON_BODY,
                    allow_empty: bool = False) -> dict[str, Any]:
    """The request's JSON object. ``allow_empty``: an absent body reads as ``{}``."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                       f"Expected application/json, not {media}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"The JSON body exceeds {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", f"The JSON body exceeds {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if allow_empty:
            return {}
        raise validation_error("A JSON body is required")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise validation_error(f"The body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        # NaN/Infinity (not JSON, and unanswerable once stored), integers of thousands of
        # digits, nesting deeper than the parser's stack.
        raise validation_error(f"The body is not acceptable JSON: {exc}"[:300]) from None
    if not isinstance(value, dict):
        raise validation_error("The JSON body must be an object")
    _refuse_nul(value)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _refuse_nul(value: Any) -> None:
    """No string may hold a NUL character: PostgreSQL text cannot store one."""
    if isinstance(value, str):
        if "\x00" in value:
            raise validation_error("Strings may not contain the NUL character")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(key)
            _refuse_nul(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_nul(item)


def int_query(request: Request, name: str, default: int, *, minimum: int = 0,
              maximum: int | None = None) -> int:
    """An integer query parameter within bounds (values above ``maximum`` are clamped;
    without a ``maximum``, values SQL cannot hold are refused)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation_error(f"{name} must be an integer", field=name) from None
    if value < minimum:
        raise validation_error(f"{name} must be at least {minimum}", field=name)
    if maximum is not None:
        return min(value, maximum)
    if value > MAX_SQL_INT:
        raise validation_error(f"{name} must be at most {MAX_SQL_INT}", field=name)
    return value
