"""The JSON REST API, mounted at ``/api`` (DESIGN §1): routes under ``/v1/…``.

``build_api(owner)`` returns the ASGI app ``gateway.app`` mounts. Route modules export
``routes: list[BaseRoute]``; :data:`ROUTE_MODULES` lists them (a module not written yet is
skipped). Helpers for handlers live in :mod:`gateway.api.common`.

The app gives each request an id (``X-Request-Id``), puts the running Gateway in the
request scope, and renders every error as JSON (:mod:`gateway.api.errors`): Starlette's own
exception handlers are switched off below ``/api`` so that 404/405 and unknown exceptions
reach the renderer too. Each request is counted (:mod:`gateway.metrics`) and logged
(:mod:`gateway.logs`) under its route's template.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from typing import TYPE_CHECKING, Protocol

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Message, Receive, Scope, Send

from gateway import errors, metrics, ratelimit
from gateway.api.auth import _CALLER_SCOPE_KEY, Caller, get_caller
from gateway.api.errors import (
    GATEWAY_SCOPE_KEY,
    REQUEST_ID_SCOPE_KEY,
    RESOURCE_SCOPE_KEY,
    ApiError,
    error_response,
)
from gateway.headers import declares_body
from gateway.logs import RequestRecord, log_access, request_id_var
from gateway.service.context import new_request_id

if TYPE_CHECKING:
    from gateway.core import Gateway
    from gateway.ratelimit import RateLimits

log = logging.getLogger("gateway.api")

#: Where the API is mounted (``gateway.app`` dispatches to it), for the names of operations.
API_PREFIX = "/api"

#: Route modules, in order (the first matching route wins). Extend this list.
ROUTE_MODULES: tuple[str, ...] = (
    "gateway.api.changes",
    "gateway.api.search",
    "gateway.api.storage",
    "gateway.api.auth_routes",
    "gateway.api.tokens",
    "gateway.api.admin",
    "gateway.api.admin_quotas",
    "gateway.api.bot_package",
    "gateway.api.bots",
    "gateway.api.openapi",
)


class GatewayHolder(Protocol):
    """What owns the running gateway (``gateway.app.GatewayApp``); None while starting."""

    gateway: Gateway | None
    rate_limits: RateLimits | None


def collect_routes(modules: tuple[str, ...] = ROUTE_MODULES) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # not written yet
            raise
        routes.extend(_anchored(route) for route in module.routes)
    return routes


def _anchored(route: BaseRoute) -> BaseRoute:
    """Starlette ends a route's pattern with ``$``, which also matches before a final line
    feed: ``/v1/tokens%0A`` would be ``/v1/tokens``, and an object key ending in a
    line feed would lose it. Match the very end of the path instead."""
    if isinstance(route, Route) and route.path_regex.pattern.endswith("$"):
        route.path_regex = re.compile(route.path_regex.pattern[:-1] + r"\Z")
    return route


class ApiApp:
    def __init__(self, owner: GatewayHolder, routes: list[BaseRoute]) -> None:
        self.owner = owner
        self.router = Router([_anchored(route) for route in routes])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        started_at = time.perf_counter()
        # Starlette's router and routes raise 404/405 (rendered below) when an app is set.
        scope.setdefault("app", self)
        rid = new_request_id()
        scope[REQUEST_ID_SCOPE_KEY] = rid
        # No Starlette exception handlers below /api: every error is rendered here, as JSON.
        scope["starlette.exception_handlers"] = ({}, {})
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        client = scope.get("client")
        record = RequestRecord("json", scope["method"], raw_path,
                               scope["query_string"].decode("latin-1"), rid,
                               remote=client[0] if client else None)
        token = request_id_var.set(rid)
        body_done = False
        started = False
        decision: ratelimit.Decision | None = None

        async def tracked_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request":
                record.bytes_in += len(message.get("body", b""))
                if not message.get("more_body", False):
                    body_done = True
            return message

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                record.status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = rid
                headers.update(ratelimit.headers(decision))
                if not body_done and declares_body(scope["headers"]):
                    # Answered without taking the body (an error, usually): the connection
                    # cannot carry another request.
                    headers["Connection"] = "close"
            elif message["type"] == "http.response.body":
                record.bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            gateway = self.owner.gateway
            if gateway is None:
                raise errors.ServiceUnavailable("The gateway is starting.")
            scope[GATEWAY_SCOPE_KEY] = gateway
            limits = self.owner.rate_limits
            if limits is not None:
                decision = await _count(limits, scope)
            await self.router(scope, tracked_receive, sender)
        except Exception as exc:
            metrics.count_backend_error(exc)
            if started:
                # Bytes are flowing: a failure can only abort the connection.
                log.warning("request %s failed after its response started", rid, exc_info=exc)
                raise
            await error_response(exc, scope, rid)(scope, tracked_receive, sender)
        finally:
            self._describe(scope, record)
            record.finish(started_at)
            metrics.observe(record)
            log_access(record)
            request_id_var.reset(token)

    def _describe(self, scope: Scope, record: RequestRecord) -> None:
        """Name the request for metrics and the access log: its route's template (a bounded
        set, unlike paths), what it was about, and who asked."""
        template = self._template(scope)
        record.operation = (f"{scope['method']} {API_PREFIX}{template}" if template
                            else "unmatched")
        resource = scope.get(RESOURCE_SCOPE_KEY)
        params = scope.get("path_params") or {}
        if isinstance(resource, dict) and resource:
            record.bucket, record.key = resource.get("bucket"), resource.get("key")
        else:
            bucket, key = params.get("bucket"), params.get("key")
            record.bucket = bucket if isinstance(bucket, str) else None
            record.key = key if isinstance(key, str) else None
        caller = scope.get(_CALLER_SCOPE_KEY)  # set once a handler authenticated
        if isinstance(caller, Caller):
            record.principal = caller.principal.name

    def _template(self, scope: Scope) -> str | None:
        """The path template of the route the request matched (the first of a path with
        another method, for a 405); None when no route has its path."""
        partial: str | None = None
        for route in self.router.routes:
            path = getattr(route, "path", None)
            match, _ = route.matches(scope)
            if match is Match.FULL and path:
                return str(path)
            if match is Match.PARTIAL and partial is None and path:
                partial = str(path)
        return partial


async def _count(limits: RateLimits, scope: Scope) -> ratelimit.Decision | None:
    """Count the request against its caller's hourly budget, once; refused → 429.
    Credentials that do not authenticate count against the client's address."""
    client = scope.get("client")
    ip = client[0] if client else None
    try:
        caller = await get_caller(Request(scope))
    except ApiError:
        caller = None
    decision = await limits.check(caller.principal if caller else None, ip)
    if decision is not None and not decision.allowed:
        raise ApiError(429, "RATE_LIMITED", ratelimit.refusal_message(decision),
                       headers=ratelimit.headers(decision))
    return decision


def build_api(owner: GatewayHolder) -> ApiApp:
    """The ASGI app to mount at ``/api``."""
    return ApiApp(owner, collect_routes())
