"""Logging: one line per record, as text or JSON (``GATEWAY_LOG_FORMAT``), and the access log.

Every HTTP request, S3 or JSON API, ends with one line on the ``gateway.access`` logger
(:func:`log_access`), carrying the request id, operation, bucket, key, status, body bytes
in and out, duration and principal; so do the gateway's own routes (probes, ``/metrics``,
the console, and ``/ws`` connections when they close), through :class:`AccessLogged`.
Nothing that authenticates a request is ever written:
no header is logged, and the query-string parameters that carry signatures, credentials or
tokens (a presigned URL is a bearer credential until it expires) are replaced by
``REDACTED``.

Any record logged while a request is handled also carries its id: the endpoints set
:data:`request_id_var`, and the formatters read it (a context variable, so it follows the
request into worker threads and nowhere else).

:func:`logging_config` is handed to uvicorn, which applies it in its own process and in
every worker process, so the server's own lines come out in the same format.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.service.context import new_request_id
from gateway.settings import Settings

ACCESS_LOGGER = "gateway.access"
access_log = logging.getLogger(ACCESS_LOGGER)

#: The id of the request being handled (empty outside one).
request_id_var: ContextVar[str] = ContextVar("gateway_request_id", default="")

#: Query parameters (compared case-insensitively) whose values are never logged: SigV4 and
#: SigV2 presigned URLs, session tokens, and anything a client may put a secret in.
SECRET_QUERY_PARAMS = frozenset({
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature",
    "awsaccesskeyid", "token", "access_token", "api_key", "apikey", "password", "secret",
})

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact_query(query: str) -> str:
    """The query string with the values of :data:`SECRET_QUERY_PARAMS` replaced."""
    if not query:
        return query
    parts = []
    for pair in query.split("&"):
        name = pair.split("=", 1)[0]
        parts.append(f"{name}=REDACTED" if name.lower() in SECRET_QUERY_PARAMS else pair)
    return "&".join(parts)


#: Request headers whose values are credentials (compared in lower case).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie",
                            "x-amz-security-token"})
#: The websockets library's frames that carry a message (as opposed to control frames).
_DATA_FRAMES = frozenset({"TEXT", "BINARY", "CONT"})


class LibraryLineRedactor(logging.Filter):
    """Redacts credentials from the lines of the libraries under the gateway, which hold
    what the gateway's own lines never do: at DEBUG, the websockets library (under uvicorn)
    traces every connection — each handshake header, and each frame as sent, a browser's
    first frame carrying its token — and their request lines and uvicorn's ``WebSocket
    <target>`` lines carry the query string. Credential headers and message frames are
    replaced by ``REDACTED`` and the message's size; request targets go through
    :func:`redact_query`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("uvicorn", "websockets")) \
                or not isinstance(record.args, tuple) or not record.args:
            return True
        msg = str(record.msg)
        args = list(record.args)
        if msg in ("< %s: %s", "> %s: %s") and len(args) == 2 \
                and str(args[0]).lower() in SECRET_HEADERS:
            args[1] = "REDACTED"
        elif msg in ("< %s", "> %s") and len(args) == 1:
            opcode = getattr(getattr(args[0], "opcode", None), "name", None)
            if opcode in _DATA_FRAMES:
                args[0] = f"{opcode} REDACTED [{len(getattr(args[0], 'data', b''))} bytes]"
        else:  # request lines, uvicorn's "WebSocket <target>"
            args = [_redact_target(a) if isinstance(a, str) else a for a in args]
        record.args = tuple(args)
        return True


def _redact_target(value: str) -> str:
    """A request target (``/path?query``) with :func:`redact_query` applied."""
    path, sep, query = value.partition("?")
    return path + sep + redact_query(query) if sep and path.startswith("/") else value


@dataclass(slots=True)
class RequestRecord:
    """What one request did, filled in while it is handled; logged and counted at its end."""

    #: ``s3``, ``json``, or ``own`` (the gateway's own routes).
    api: str
    method: str
    #: The path as sent (percent-encoded), and the query string as sent.
    path: str
    query: str
    request_id: str
    #: The S3 operation name, or the JSON API's ``METHOD /route/{template}``.
    operation: str = "unknown"
    bucket: str | None = None
    key: str | None = None
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: The user name, or ``anonymous``.
    principal: str = "anonymous"
    remote: str | None = None
    duration_ms: float = 0.0

    def finish(self, started: float) -> None:
        """``started``: ``time.perf_counter()`` when the request arrived."""
        self.duration_ms = round((time.perf_counter() - started) * 1000, 3)

    def fields(self) -> dict[str, Any]:
        out = asdict(self)
        out["query"] = redact_query(self.query)
        return out


def log_access(record: RequestRecord) -> None:
    """The request's access line (at INFO, so ``GATEWAY_LOG_LEVEL=warning`` silences it)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    query = redact_query(record.query)
    access_log.info(
        "%s %s%s %d %s %.1fms op=%s principal=%s in=%d out=%d", record.method, record.path,
        "?" + query if query else "", record.status, record.request_id, record.duration_ms,
        record.operation, record.principal, record.bytes_in, record.bytes_out,
        extra={"access": record.fields()})


#: Where an endpoint that authenticates by itself (``/ws``) leaves the principal's name.
PRINCIPAL_SCOPE_KEY = "gateway.principal"


class AccessLogged:
    """An access line (and a request id) for each request to ``app``, named by
    ``operation_of``. For the gateway's own routes, which are not counted in the request
    metrics: a scrape must not count itself, and probes would drown the figures. A WebSocket
    is logged when it ends: status 101 once accepted, its duration the connection's, its
    bytes those of the messages either way."""

    def __init__(self, app: ASGIApp, operation_of: Callable[[Scope], str]) -> None:
        self.app = app
        self.operation_of = operation_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = new_request_id()
        client = scope.get("client")
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        record = RequestRecord("own", scope.get("method", "GET"), raw_path,
                               scope["query_string"].decode("latin-1"), rid,
                               operation=self.operation_of(scope),
                               remote=client[0] if client else None)
        token = request_id_var.set(rid)

        async def counted_receive() -> Message:
            message = await receive()
            record.bytes_in += _message_size(message, "http.request", "websocket.receive")
            return message

        async def counted_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                record.status = message["status"]
                MutableHeaders(scope=message)["X-Request-Id"] = rid
            elif kind == "websocket.accept":
                record.status = 101
                headers = list(message.get("headers") or [])
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            elif kind == "websocket.close" and not record.status:
                record.status = 403  # refused before the handshake completed
            record.bytes_out += _message_size(message, "http.response.body", "websocket.send")
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            principal = scope.get(PRINCIPAL_SCOPE_KEY)
            if isinstance(principal, str):
                record.principal = principal
            record.finish(started)
            log_access(record)
            request_id_var.reset(token)


def _message_size(message: Message, *kinds: str) -> int:
    if message["type"] not in kinds:
        return 0
    if message["type"] == "websocket.receive" or message["type"] == "websocket.send":
        text = message.get("text")
        return len(text.encode()) if text is not None else len(message.get("bytes") or b"")
    return len(message.get("body", b""))


class TextFormatter(logging.Formatter):
    """The classic line, with the request id appended when a request is being handled."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id_var.get()
        if rid and not hasattr(record, "access"):
            line += f" [request {rid}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the request
    id, an access line's fields, and a traceback as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            out.update(access)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # ASCII only: a key or message with a line break or control character stays on
        # one line, escaped.
        return json.dumps(out, default=str)


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the server and uvicorn's loggers."""
    formatter = "gateway.logs.JsonFormatter" if settings.json_logs else "gateway.logs.TextFormatter"
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"()": formatter}},
        "filters": {"redact": {"()": "gateway.logs.LibraryLineRedactor"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "gateway",
                                "filters": ["redact"], "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's loggers carry their own handlers by default: ours instead.
            "uvicorn": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
            "alembic": {"level": "WARNING"},
        },
    }


def configure(settings: Settings) -> None:
    """Apply :func:`logging_config` in this process; Python warnings become records too, so
    that a JSON log holds nothing but JSON lines."""
    import logging.config

    logging.config.dictConfig(logging_config(settings))
    logging.captureWarnings(True)
