"""The ASGI application: S3 at the root, operations endpoints beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from gateway import console, metrics
from gateway.api import build_api
from gateway.api.ws import ChangeSocket
from gateway.core import Gateway
from gateway.logs import AccessLogged
from gateway.metadata.db import Database
from gateway.ratelimit import RateLimits
from gateway.s3.endpoint import S3Endpoint
from gateway.s3.routing import split_host_bucket
from gateway.service.accounts import RootCredentials
from gateway.service.gc import collect_garbage
from gateway.settings import Settings
from storage_backends.registry import open_backend

log = logging.getLogger("gateway")

#: Paths that belong to the gateway itself, not to S3 (their names are reserved buckets,
#: so S3 requests on them, such as CreateBucket, are still answered by S3).
API_PREFIX = "/api"
_OWN_PREFIXES = (API_PREFIX + "/", "/console/")
_OWN_READ_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/console"})


def announce_root(creds: RootCredentials) -> None:
    """Shown once, on the very first start, on stdout (never through logging)."""
    print(
        "\n"
        "  No GATEWAY_ROOT_ACCESS_KEY / GATEWAY_ROOT_SECRET_KEY were set, so an admin key\n"
        "  was generated. It is shown this once; keep it safe:\n\n"
        f"    AWS_ACCESS_KEY_ID={creds.access_key}\n"
        f"    AWS_SECRET_ACCESS_KEY={creds.secret_key}\n",
        file=sys.stdout,
        flush=True,
    )


def _below_api(scope: Scope) -> Scope:
    """The scope the API app sees, as a ``Mount("/api")`` would make it: the full path,
    with ``/api`` added to ``root_path`` (routes match the path below it)."""
    root_path: str = scope.get("root_path", "")
    return {**scope, "app_root_path": scope.get("app_root_path", root_path),
            "root_path": root_path + API_PREFIX}


_OWN_OPERATIONS = {"/healthz": "Healthz", "/readyz": "Readyz", "/metrics": "Metrics",
                   "/ws": "WebSocket"}


def _own_operation(scope: Scope) -> str:
    path: str = scope["path"]
    if path == "/console" or path.startswith("/console/"):
        return "Console"
    return _OWN_OPERATIONS.get(path, "unmatched")


class GatewayApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.s3 = S3Endpoint()
        self.gateway: Gateway | None = None
        #: Rate-limit policy and counters, while running (the JSON API checks them too).
        self.rate_limits: RateLimits | None = None
        #: ``/api/…``, dispatched directly rather than through a Starlette ``Mount``, whose
        #: pattern (``.*`` then ``$``) does not match across a line feed (``%0A``, legal in
        #: an S3 key).
        self.api = build_api(self)
        #: ``/ws``: the change log, live (WebSocket scopes all come to ``self.own``).
        self.ws = ChangeSocket()
        self.own = Starlette(
            routes=[Route("/healthz", self.healthz), Route("/readyz", self.readyz),
                    WebSocketRoute("/ws", self.ws.endpoint), *console.routes],
            lifespan=self.lifespan,
        )
        if settings.metrics_enabled:
            self.own.router.routes.insert(0, Route("/metrics", self.scrape))
        self.own_logged = AccessLogged(self.own, _own_operation)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            host_bucket = None
            if self.settings.domain:
                host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"),
                            "")
                host_bucket = split_host_bucket(host, self.settings.domain)
            own = path.startswith(_OWN_PREFIXES) or (
                path in _OWN_READ_PATHS and scope["method"] in ("GET", "HEAD"))
            if host_bucket is None and path.startswith(API_PREFIX + "/"):
                await self.api(_below_api(scope), receive, send)
            elif host_bucket is None and own:
                await self.own_logged(scope, receive, send)
            else:
                await self.s3(scope, receive, send)
            return
        await self.own_logged(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        settings = self.settings
        settings.multipart_expiry_seconds  # noqa: B018 - a bad value stops the start here
        if settings.json_logs:
            logging.captureWarnings(True)  # a JSON log holds nothing but JSON lines
        rate_limits = RateLimits.from_settings(settings)  # a bad value stops the start here
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url,
                      busy_timeout=settings.database_busy_timeout)
        await db.start()
        backend = open_backend(settings.backend, data_dir=settings.data_dir,
                               s3=settings.s3_options())
        gateway = Gateway.build(settings, db, backend)
        creds = await gateway.accounts.ensure_root()
        if creds is not None and creds.generated:
            announce_root(creds)
        self.rate_limits = self.s3.rate_limits = rate_limits
        self.gateway = self.s3.gateway = gateway
        await gateway.quotas.register()
        tasks = [asyncio.create_task(self._gc_loop(gateway)),
                 asyncio.create_task(self._lifecycle_loop(gateway)),
                 asyncio.create_task(self._heartbeat_loop(gateway)),
                 # Webhook delivery, on the instance holding its lease (released at stop).
                 asyncio.create_task(gateway.webhooks.run()),
                 self.ws.start(gateway)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.ws.stop()
            self.s3.gateway = None
            self.rate_limits = self.s3.rate_limits = None
            await rate_limits.aclose()
            await backend.aclose()
            await db.aclose()

    async def _gc_loop(self, gateway: Gateway) -> None:
        """Housekeeping: expire abandoned multipart uploads, collect blobs, purge sessions;
        on one instance at a time (see ``gateway.service.jobs``). The packages'
        ``.gbdrive/temp/`` folders expire by a lifecycle rule (``_lifecycle_loop``)."""
        settings = gateway.settings
        period = min(settings.housekeeping_seconds, settings.multipart_expiry_seconds)

        async def housekeeping() -> None:
            await gateway.multipart.expire(settings.multipart_expiry_seconds)
            await collect_garbage(gateway.ctx)
            await gateway.sessions.purge_expired()

        while True:
            ran = True
            try:
                ran = await gateway.jobs.run("housekeeping", period, housekeeping)
            except Exception:
                log.exception("housekeeping failed; will retry")
            await asyncio.sleep(period if ran else min(period, gateway.jobs.standby_seconds))

    async def _lifecycle_loop(self, gateway: Gateway) -> None:
        """Bucket lifecycle rules and the bot packages' temp folders, applied on one
        instance at a time (the ``lifecycle`` job lease): hourly by default, and as often
        as ``GATEWAY_TEMP_EXPIRY`` needs when that is shorter."""
        settings = gateway.settings
        period = max(1, min(settings.housekeeping_seconds, settings.temp_expiry_seconds))

        async def apply_rules() -> None:
            await gateway.lifecycle.run()

        while True:
            ran = True
            try:
                ran = await gateway.jobs.run("lifecycle", period, apply_rules)
            except Exception:
                log.exception("the lifecycle run failed; will retry")
            await asyncio.sleep(period if ran else min(period, gateway.jobs.standby_seconds))

    async def _heartbeat_loop(self, gateway: Gateway) -> None:
        """This instance is alive; what stopped ones held for their writes is released."""
        while True:
            try:
                await gateway.quotas.heartbeat()
            except Exception:
                log.exception("heartbeat failed; will retry")
            await asyncio.sleep(gateway.settings.heartbeat_seconds)

    async def healthz(self, _request: Request) -> Response:
        return PlainTextResponse("ok")

    async def scrape(self, _request: Request) -> Response:
        """Prometheus text format, without credentials (see :mod:`gateway.metrics`)."""
        return Response(await metrics.render(self.gateway), media_type=metrics.CONTENT_TYPE)

    async def readyz(self, _request: Request) -> Response:
        gateway = self.gateway
        if gateway is None:
            return JSONResponse({"ready": False, "reason": "starting"}, status_code=503)
        try:
            await gateway.ctx.db.ping()
            async for _ in gateway.ctx.backend.list("readyz-probe/"):
                break
            scanner = gateway.packages.scanner
            if scanner is not None:
                await scanner.ping()  # uploads fail closed without it
        except Exception as exc:
            return JSONResponse({"ready": False, "reason": type(exc).__name__},
                                status_code=503)
        return JSONResponse({"ready": True})


def create_app(settings: Settings | None = None) -> GatewayApp:
    return GatewayApp(settings or Settings.from_env())
