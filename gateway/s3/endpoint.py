"""The S3 endpoint: one ASGI callable that authenticates, routes, runs the handler and
renders every result or error the same way, with CORS headers where a rule allows."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway import errors, metrics
from gateway.auth import RequestView, authenticate_request
from gateway.auth.sigv2 import query_signed_headers
from gateway.core import Gateway
from gateway.headers import declares_body
from gateway.logs import RequestRecord, log_access, request_id_var
from gateway.ratelimit import Decision, RateLimits
from gateway.ratelimit import headers as rate_headers
from gateway.s3 import cors
from gateway.s3.errors import error_response
from gateway.s3.handlers import HANDLERS
from gateway.s3.request import S3Request
from gateway.s3.routing import Op, Operation, resolve_operation, split_host_bucket
from gateway.service.context import new_request_id
from gateway.types import ANONYMOUS, Principal

log = logging.getLogger("gateway.s3")


@dataclass(slots=True)
class _Parsed:
    method: str
    raw_path: str
    query_string: str
    resource: str
    request_id: str
    header_pairs: list[tuple[str, str]]
    headers: dict[str, str]
    query: dict[str, str]
    #: This request's rate-limit count (S3 limiting on), for the X-RateLimit-* headers.
    rate: Decision | None = None
    #: Who the request authenticated as, once known (for the access log).
    principal: Principal | None = None


class S3Endpoint:
    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self.rate_limits: RateLimits | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        header_pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers: dict[str, str] = {}
        for name, value in header_pairs:
            lname = name.lower()
            headers[lname] = f"{headers[lname]},{value}" if lname in headers else value
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query_string: str = scope["query_string"].decode("latin-1")
        parsed = _Parsed(scope["method"], raw_path, query_string, unquote(raw_path),
                         new_request_id(), header_pairs, headers,
                         dict(parse_qsl(query_string, keep_blank_values=True)))
        client = scope.get("client")
        record = RequestRecord("s3", parsed.method, raw_path, query_string, parsed.request_id,
                               remote=client[0] if client else None)
        token = request_id_var.set(parsed.request_id)
        body_done = False

        async def tracked_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request":
                record.bytes_in += len(message.get("body", b""))
                if not message.get("more_body", False):
                    body_done = True
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                record.bytes_out += len(message.get("body", b""))
            await send(message)

        operation: Operation | None = None
        try:
            operation = self._route(parsed)
            record.operation = operation.name
            record.bucket, record.key = operation.bucket, operation.key
            response = await self._handle(scope, tracked_receive, parsed, operation)
        except Exception as exc:
            response = self._render_error(exc, parsed)
        if parsed.principal is not None:
            record.principal = parsed.principal.name
        if not body_done and declares_body(scope["headers"]):
            # Answered without taking the body: a client that sent `Expect: 100-continue`
            # will never send it, and one that did should not have gigabytes drained.
            # Either way the connection cannot carry another request.
            response.headers["Connection"] = "close"
        if "origin" in headers and operation is not None and operation.op is not Op.CORS_PREFLIGHT:
            await self._add_cors(response, parsed, operation)
        for name, value in rate_headers(parsed.rate).items():
            response.headers[name] = value
        response.headers["x-amz-request-id"] = parsed.request_id
        response.headers["x-amz-id-2"] = parsed.request_id
        response.headers["Server"] = "gateway"
        record.status = response.status_code
        try:
            await response(scope, receive, counted_send)
        finally:
            record.finish(started)
            metrics.observe(record)
            log_access(record)
            request_id_var.reset(token)

    def _route(self, p: _Parsed) -> Operation:
        if self.gateway is None:
            raise errors.ServiceUnavailable("The gateway is starting.")
        return resolve_operation(p.method, p.headers.get("host", ""), p.raw_path, p.query,
                                 p.headers, domain=self.gateway.settings.domain)

    def _render_error(self, exc: Exception, p: _Parsed) -> Response:
        head = p.method == "HEAD"
        metrics.count_backend_error(exc)
        if isinstance(exc, errors.GatewayError):
            return error_response(exc, resource=p.resource, request_id=p.request_id, head=head)
        if isinstance(exc, ClientDisconnect):
            # Nobody is left to read the answer; nothing was committed.
            log.info("client went away during %s %s (request %s)", p.method, p.resource,
                     p.request_id)
            return error_response(errors.IncompleteBody(), resource=p.resource,
                                  request_id=p.request_id, head=head)
        log.error("internal error handling %s %s (request %s)", p.method, p.resource,
                  p.request_id, exc_info=exc)
        return error_response(errors.InternalError(), resource=p.resource,
                              request_id=p.request_id, head=head)

    async def _handle(self, scope: Scope, receive: Receive, p: _Parsed,
                      operation: Operation) -> Response:
        gateway = self.gateway
        assert gateway is not None
        if operation.op is Op.CORS_PREFLIGHT:
            return await self._preflight(p, operation)
        principals: dict[str, Principal] = {}

        async def lookup_secret(access_key: str) -> str | None:
            principal, secret = await gateway.accounts.lookup(access_key)
            if principal is not None:
                principals[access_key] = principal
            return secret

        auth = await authenticate_request(
            RequestView(p.method, p.raw_path, p.query_string, p.header_pairs), lookup_secret,
            virtual_host_bucket=split_host_bucket(p.headers.get("host", ""),
                                                  gateway.settings.domain))
        # No credentials: the service decides what an anonymous caller may read.
        principal = ANONYMOUS if auth is None else principals[auth.access_key]
        p.principal = principal
        if self.rate_limits is not None:
            client = scope.get("client")
            p.rate = await self.rate_limits.check_s3(principal, client[0] if client else None)
            if p.rate is not None and not p.rate.allowed:
                raise errors.SlowDown()
        if auth is not None and auth.presigned and "AWSAccessKeyId" in p.query:
            # SigV2 URLs carry signed Content-Type, Content-MD5 and x-amz-* in the query;
            # they count as the request's headers (a header actually sent wins).
            for name, value in query_signed_headers(p.query_string):
                p.headers.setdefault(name, value)
        if operation.op is Op.METHOD_NOT_ALLOWED:
            raise errors.MethodNotAllowed(fields={"Method": p.method})
        handler = HANDLERS.get(operation.op)
        if handler is None:
            raise errors.NotImplemented_(f"{operation.name} is not implemented by this gateway.")
        request = Request(scope, receive)
        return await handler(S3Request(request, gateway, operation, principal, auth,
                                       p.headers, p.query, p.request_id))

    async def _rules(self, bucket_name: str | None) -> list[cors.Rule]:
        """The bucket's CORS rules, then the server-wide default rule."""
        gateway = self.gateway
        assert gateway is not None
        rules: list[cors.Rule] = []
        if bucket_name:
            bucket = await gateway.buckets.find(bucket_name)
            if bucket is not None and bucket.cors:
                rules.extend(bucket.cors)
        default = cors.default_rule(gateway.settings.cors_origins)
        if default is not None:
            rules.append(default)
        return rules

    async def _preflight(self, p: _Parsed, operation: Operation) -> Response:
        """Answered before authentication: a browser sends no credentials with it."""
        origin = p.headers.get("origin")
        method = p.headers.get("access-control-request-method")
        if not origin or not method:
            raise errors.InvalidRequest(
                "Insufficient information. Origin request header needed."
                if not origin else "Insufficient information. "
                "Access-Control-Request-Method header needed.")
        wanted = cors.requested_headers(p.headers.get("access-control-request-headers"))
        rules = await self._rules(operation.bucket)
        if not rules:
            raise errors.CORSForbidden("CORSResponse: CORS is not enabled for this bucket.")
        rule = cors.match(rules, origin, method.upper(), wanted)
        if rule is None:
            raise errors.CORSForbidden()
        return Response(status_code=200, headers=cors.preflight_headers(rule, origin, wanted))

    async def _add_cors(self, response: Response, p: _Parsed, operation: Operation) -> None:
        try:
            rules = await self._rules(operation.bucket)
        except Exception:
            log.warning("could not read CORS rules for %s", operation.bucket, exc_info=True)
            return
        if not rules:
            return
        response.headers["Vary"] = "Origin"
        rule = cors.match(rules, p.headers["origin"], p.method)
        if rule is not None:
            for name, value in cors.response_headers(rule, p.headers["origin"]).items():
                response.headers[name] = value
