"""JSON error bodies for the API.

Two shapes, chosen by the endpoint family (:data:`STORAGE_STYLE_PREFIXES`):

- the Storage API reference's flat shape::

      {"error": "not_found", "message": "Object not found", "resource": "b/k"}

  (409 names the ``bucket``; 507 carries ``quota`` and ``used``);
- the API overview's envelope, everywhere else::

      {"success": false, "error": {"code": "NOT_FOUND", "message": "…", "details": {…}}}

The flat ``error`` is the envelope ``code`` lower-cased, so both families agree on names.
Every body also carries the request id (``request_id``), as does the ``X-Request-Id`` header.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from gateway import errors

log = logging.getLogger("gateway.api")

#: Request-scope keys the API app (``gateway.api.build_api``) and handlers set. Read them
#: through ``gateway.api.common`` (``gateway_of``, ``request_id``, ``set_resource``).
GATEWAY_SCOPE_KEY = "gateway.api.gateway"
REQUEST_ID_SCOPE_KEY = "gateway.api.request_id"
#: The bucket/key a request is about, for error bodies.
RESOURCE_SCOPE_KEY = "gateway.api.resource"

#: Route paths (below ``/api``) whose errors use the Storage API reference's flat shape.
STORAGE_STYLE_PREFIXES: tuple[str, ...] = ("/v1/storage",)

#: Envelope codes by HTTP status (the overview's list, plus the statuses storage needs).
STATUS_CODES: dict[int, str] = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    411: "LENGTH_REQUIRED",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    416: "RANGE_NOT_SATISFIABLE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "SERVER_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "SERVICE_UNAVAILABLE",
    507: "INSUFFICIENT_STORAGE",
}

#: Gateway errors whose HTTP status differs in the JSON API from S3's.
_STATUS_OVERRIDES: dict[str, int] = {
    "QuotaExceeded": 507,  # the reference's "insufficient_storage"
    "EntityTooLarge": 413,
}

#: Friendlier messages than S3's for the common cases (the reference's wording).
_MESSAGES: dict[str, str] = {
    "NoSuchKey": "Object not found",
    "NoSuchBucket": "Bucket not found",
    "NoSuchUpload": "Multipart upload not found",
    "BucketAlreadyExists": "Bucket already exists",
    "BucketAlreadyOwnedByYou": "Bucket already exists",
    "BucketNotEmpty": "Bucket is not empty",
    "QuotaExceeded": "Storage quota exceeded",
    "AccessDenied": "Access denied",
    "MissingContentLength": "Content-Length is required",
}


class ApiError(Exception):
    """An error that only the JSON API knows (bad JSON, missing credentials, …)."""

    def __init__(self, status: int, code: str | None = None, message: str | None = None,
                 details: Mapping[str, Any] | None = None, *,
                 headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.code = code or STATUS_CODES.get(status, "SERVER_ERROR")
        self.message = message or self.code.replace("_", " ").capitalize()
        super().__init__(self.message)
        self.details: dict[str, Any] = dict(details or {})
        self.headers: dict[str, str] = dict(headers or {})


def unauthorized(message: str = "Missing or invalid authentication") -> ApiError:
    return ApiError(401, "UNAUTHORIZED", message, headers={"WWW-Authenticate": "Bearer"})


def validation_error(message: str, **details: Any) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message, details)


def route_path(scope: Scope) -> str:
    """The path below the API's mount point (``/v1/…``)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def is_storage_style(scope: Scope) -> bool:
    return route_path(scope).startswith(STORAGE_STYLE_PREFIXES)


def _from_gateway(exc: errors.GatewayError) -> ApiError:
    status = _STATUS_OVERRIDES.get(exc.code, exc.status)
    details: dict[str, Any] = {"s3_code": exc.code, **exc.fields}
    if isinstance(exc, errors.QuotaExceeded):
        details.update(quota=exc.limit, used=exc.used)
    message = _MESSAGES.get(exc.code) if exc.message == exc.default_message else None
    return ApiError(status, STATUS_CODES.get(status, "SERVER_ERROR"), message or exc.message,
                    details, headers=exc.headers)


def as_api_error(exc: BaseException, request_id: str) -> ApiError:
    """Any exception as an ApiError; unknown ones are logged here (never sent)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, errors.GatewayError):
        return _from_gateway(exc)
    if isinstance(exc, HTTPException):
        return ApiError(exc.status_code, None, exc.detail if exc.detail else None,
                        headers=exc.headers)
    if isinstance(exc, ClientDisconnect):
        return ApiError(400, "VALIDATION_ERROR", "The client went away before the body ended")
    log.error("internal error (request %s)", request_id, exc_info=exc)
    return ApiError(500, "SERVER_ERROR", "Internal server error")


def storage_body(err: ApiError, resource: Mapping[str, str], request_id: str
                 ) -> dict[str, Any]:
    """The reference's flat shape. ``resource``: what the request was about, as
    ``{"bucket": …, "key": …}`` (either may be missing)."""
    body: dict[str, Any] = {"error": err.code.lower(), "message": err.message}
    bucket, key = resource.get("bucket"), resource.get("key")
    named = err.details.get("BucketName")
    if isinstance(named, str) and named != bucket:
        bucket, key = named, None  # the error is about another bucket (a copy's target)
    if err.status == 409 and bucket:
        body["bucket"] = bucket
    elif err.status == 507 and "quota" in err.details:
        body["quota"] = err.details["quota"]
        body["used"] = err.details["used"]
    elif bucket:
        body["resource"] = f"{bucket}/{key}" if key else bucket
    body["code"] = err.details.get("s3_code", err.code)
    body["request_id"] = request_id
    return body


def envelope_body(err: ApiError, request_id: str) -> dict[str, Any]:
    return {"success": False,
            "error": {"code": err.code, "message": err.message, "details": err.details},
            "request_id": request_id}


def error_response(exc: BaseException, scope: Scope, request_id: str) -> Response:
    err = as_api_error(exc, request_id)
    headers = {**err.headers, "X-Request-Id": request_id}
    if err.status == 304 or scope.get("method") == "HEAD":
        # 304 never has a body; a HEAD answer carries only status and headers.
        return Response(status_code=err.status, headers=headers)
    if is_storage_style(scope):
        body = storage_body(err, scope.get(RESOURCE_SCOPE_KEY, {}), request_id)
    else:
        body = envelope_body(err, request_id)
    return JSONResponse(body, status_code=err.status, headers=headers)
