"""The S3 endpoint: one ASGI callable that authenticates, routes, runs the handler and
renders every result or error the same way."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl, unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway import errors
from gateway.auth.sigv4 import RequestView, authenticate
from gateway.core import Gateway
from gateway.s3.errors import error_response
from gateway.s3.handlers import HANDLERS
from gateway.s3.request import S3Request
from gateway.s3.routing import Op, resolve_operation
from gateway.service.context import new_request_id
from gateway.types import Principal

log = logging.getLogger("gateway.s3")
access_log = logging.getLogger("gateway.access")

_SECRET_QUERY = ("X-Amz-Signature", "Signature", "X-Amz-Security-Token")


def redact_query(query: str) -> str:
    """Query strings go to the access log without signatures (a presigned URL is a bearer
    credential until it expires)."""
    if not query or not any(word in query for word in _SECRET_QUERY):
        return query
    parts = []
    for pair in query.split("&"):
        name = pair.split("=", 1)[0]
        parts.append(f"{name}=REDACTED" if name in _SECRET_QUERY else pair)
    return "&".join(parts)


def _declares_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class S3Endpoint:
    def __init__(self) -> None:
        self.gateway: Gateway | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = new_request_id()
        method: str = scope["method"]
        raw_path_bytes: bytes = scope.get("raw_path") or scope["path"].encode()
        raw_path = raw_path_bytes.decode("latin-1")
        query_string: str = scope["query_string"].decode("latin-1")
        resource = unquote(raw_path)
        body_done = False

        async def tracked_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            return message

        response = await self._handle(scope, tracked_receive, method, raw_path, query_string,
                                      resource, request_id)
        if not body_done and _declares_body(scope):
            # Answered without taking the body: a client that sent `Expect: 100-continue`
            # will never send it, and one that did should not have gigabytes drained.
            # Either way the connection cannot carry another request.
            response.headers["Connection"] = "close"
        response.headers["x-amz-request-id"] = request_id
        response.headers["x-amz-id-2"] = request_id
        response.headers["Server"] = "gateway"
        try:
            await response(scope, receive, send)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s%s %d %s %.1fms", method, raw_path,
                                "?" + redact_query(query_string) if query_string else "",
                                response.status_code, request_id,
                                (time.perf_counter() - started) * 1000)

    async def _handle(self, scope: Scope, receive: Receive, method: str, raw_path: str,
                      query_string: str, resource: str, request_id: str) -> Response:
        head = method == "HEAD"
        gateway = self.gateway
        try:
            if gateway is None:
                raise errors.ServiceUnavailable("The gateway is starting.")
            header_pairs = [(k.decode("latin-1"), v.decode("latin-1"))
                            for k, v in scope["headers"]]
            headers: dict[str, str] = {}
            for name, value in header_pairs:
                lname = name.lower()
                headers[lname] = f"{headers[lname]},{value}" if lname in headers else value
            query = dict(parse_qsl(query_string, keep_blank_values=True))
            operation = resolve_operation(method, headers.get("host", ""), raw_path, query,
                                          headers, domain=gateway.settings.domain)
            principals: dict[str, Principal] = {}

            async def lookup_secret(access_key: str) -> str | None:
                principal, secret = await gateway.accounts.lookup(access_key)
                if principal is not None:
                    principals[access_key] = principal
                return secret

            auth = await authenticate(RequestView(method, raw_path, query_string,
                                                  header_pairs), lookup_secret)
            if auth is None:
                raise errors.AccessDenied()
            principal = principals[auth.access_key]
            if operation.op is Op.METHOD_NOT_ALLOWED:
                raise errors.MethodNotAllowed(fields={"Method": method})
            handler = HANDLERS.get(operation.op)
            if handler is None:
                raise errors.NotImplemented_(
                    f"{operation.name} is not implemented by this gateway.")
            request = Request(scope, receive)
            return await handler(S3Request(request, gateway, operation, principal, auth,
                                           headers, query, request_id))
        except errors.GatewayError as exc:
            return error_response(exc, resource=resource, request_id=request_id, head=head)
        except ClientDisconnect:
            # Nobody is left to read the answer; nothing was committed.
            log.info("client went away during %s %s (request %s)", method, resource,
                     request_id)
            return error_response(errors.IncompleteBody(), resource=resource,
                                  request_id=request_id, head=head)
        except Exception:
            log.exception("internal error handling %s %s (request %s)", method, resource,
                          request_id)
            return error_response(errors.InternalError(), resource=resource,
                                  request_id=request_id, head=head)
