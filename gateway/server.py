"""Connection guards uvicorn leaves out: limits on how long and how much a client may hold.

uvicorn (with httptools) times out only idle keep-alive connections. A client may otherwise
open a connection and never finish its request head, send headers without end, stop
sending a body it announced, or stop reading a response — each holding a socket, a task
and buffers for as long as it likes. :class:`GuardedHttpProtocol` closes such connections:

* the request head must arrive whole within ``GATEWAY_REQUEST_HEADER_TIMEOUT`` seconds of
  its first byte (or of the connection opening) and be at most :data:`MAX_HEAD_BYTES`
  (answered ``RequestHeaderSectionTooLarge``);
* a request body may not stall for ``GATEWAY_IDLE_TIMEOUT`` seconds while the gateway
  waits for it (answered ``RequestTimeout``, as S3 does, when no response has started);
* a response may not stay unread that long (the connection is aborted).

It also writes each response's head together with its first body bytes, in one write
(:class:`_HeadWithBody`): a process killed between the two writes would leave the client a
head without its body, and botocore takes a 200 head alone for an empty success. With one
write, a small answer (every XML and JSON one) is on the wire whole or not at all.

The values are read from the environment once per process: ``gateway serve`` puts its
flags there before uvicorn starts its workers.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import os
import secrets
from asyncio import TimerHandle
from typing import Any

from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway import errors

log = logging.getLogger("gateway.server")

#: The request line and headers together; S3 allows 8 KiB of headers, presigned URLs with
#: session tokens need room in the request line.
MAX_HEAD_BYTES = 16 * 1024
#: How long an error answer written by a guard may take to leave before the socket is cut.
_FLUSH_SECONDS = 5.0
#: How long a refused client may go on sending (read and dropped) before the socket closes.
_LINGER_SECONDS = 2.0
#: How long a closing TLS connection with nothing left to send may wait for its peer's
#: close_notify during a shutdown.
_CLOSE_NOTIFY_SECONDS = 0.5
API_PREFIX = "/api/"


@functools.cache
def _timeouts() -> tuple[float, float]:
    def seconds(name: str, default: float) -> float:
        raw = os.environ.get(name, "")
        return float(raw) if raw.strip() else default

    return (seconds("GATEWAY_REQUEST_HEADER_TIMEOUT", 10.0),
            seconds("GATEWAY_IDLE_TIMEOUT", 60.0))


def _error_bytes(exc: errors.GatewayError, path: str) -> bytes:
    """A whole HTTP/1.1 answer in the API's JSON shape or S3's XML, closing the
    connection."""
    request_id = secrets.token_hex(8).upper()
    response: Response
    if path.startswith(API_PREFIX):
        from gateway.api.errors import error_response as api_error

        response = api_error(exc, {"path": path, "root_path": "/api", "method": "GET"},
                             request_id)
    else:
        from gateway.s3.errors import error_response as s3_error

        response = s3_error(exc, resource=path, request_id=request_id)
    phrase = http.HTTPStatus(response.status_code).phrase
    head = [f"HTTP/1.1 {response.status_code} {phrase}\r\n".encode()]
    head.extend(name + b": " + value + b"\r\n" for name, value in response.raw_headers)
    head.append(b"connection: close\r\n\r\n")
    return b"".join(head) + bytes(response.body)


class _HeadWithBody:
    """The transport one request's cycle writes through: the write after
    :attr:`hold_next` is set (the response head) is held and goes out with the next one
    (the first body bytes) as a single write."""

    __slots__ = ("_held", "_transport", "hold_next")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held = b""
        self.hold_next = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.hold_next:
            self.hold_next = False
            self._held = bytes(data)
            return
        if self._held:
            data, self._held = self._held + bytes(data), b""
        self._transport.write(data)

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout, self._idle_timeout = _timeouts()
        self._head_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._write_timer: TimerHandle | None = None
        self._head_bytes = 0
        self._last_body = 0.0
        #: A guard has answered: whatever else the client sent is not parsed into requests.
        self._refused = False
        self._shutting_down = False

    # -- the request head ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        # The parser can fail on bytes after a guard's refusal, within the same feed: the
        # refusal was the answer, and the connection is already closing.
        if not self._refused:
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._head_bytes = 0
        if self._head_timer is None:
            self._arm_head()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)  # first: a refusal names the path (its JSON or XML shape)
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel("_head_timer")
        if self._refused or self.transport.is_closing():
            return
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope and cycle.more_body:
            self._last_body = self.loop.time()
            self._body_timer = self.loop.call_later(self._idle_timeout, self._body_idle)

    def _arm_head(self) -> None:
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_expired)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES and not self._refused:
            path = self.url.split(b"?", 1)[0].decode("latin-1", "replace")
            self._refuse(errors.RequestHeaderSectionTooLarge(), path)

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            # Nothing sensible to answer to half a request: the socket is simply closed.
            self.transport.close()

    # -- the request body ------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._last_body = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel("_body_timer")
        if not self._refused:
            super().on_message_complete()

    def _body_idle(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        waited = self.loop.time() - self._last_body
        # Not the client's fault: the gateway has not asked for the body yet (100-continue)
        # or is not reading as fast as it arrives (reading is paused).
        if (cycle.waiting_for_100_continue or self.flow.read_paused
                or waited < self._idle_timeout):
            if cycle.waiting_for_100_continue or self.flow.read_paused:
                self._last_body = self.loop.time()
            delay = max(self._idle_timeout - (self.loop.time() - self._last_body), 0.05)
            self._body_timer = self.loop.call_later(delay, self._body_idle)
            return
        if cycle.response_started:
            self.transport.abort()
            return
        path = self.scope.get("path", "/") if self.scope else "/"
        cycle.keep_alive = False
        self._refuse(errors.RequestTimeout(), path)

    # -- the response ----------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._idle_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        self._cancel("_write_timer")
        super().resume_writing()

    def _write_stalled(self) -> None:
        self._write_timer = None
        if self.flow.write_paused:
            # The peer stopped reading: what is buffered for it will never leave.
            self.transport.abort()

    # -- the end ---------------------------------------------------------------------------

    def _refuse(self, exc: errors.GatewayError, path: str) -> None:
        """Answer and close, lingering: closing a socket with unread input makes the kernel
        reset the connection, and a reset can destroy the answer before the client reads
        it. So the answer goes out with a FIN, what the client still sends is read and
        dropped, and the socket closes when the client does or :data:`_LINGER_SECONDS`
        later."""
        self._refused = True
        self._cancel_all()
        self.transport.write(_error_bytes(exc, path))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.flow.resume_reading()
            self.loop.call_later(_LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
        self.loop.call_later(_FLUSH_SECONDS, self.transport.abort)

    def shutdown(self) -> None:
        """A graceful shutdown closes idle connections at once, and the others after their
        response. Over TLS, closing waits for the peer's close_notify (asyncio allows it 30
        seconds), which an idle pooled client never sends — and the server waits for every
        connection to end: so a connection still closing is cut, after
        :data:`_CLOSE_NOTIFY_SECONDS` (or :data:`_FLUSH_SECONDS` while some of its answer
        waits to be sent)."""
        self._shutting_down = True
        super().shutdown()
        self._cut_when_closing()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._shutting_down:
            self._cut_when_closing()

    def _cut_when_closing(self) -> None:
        if self.transport.is_closing():
            pending = self.transport.get_write_buffer_size()
            self.loop.call_later(_FLUSH_SECONDS if pending else _CLOSE_NOTIFY_SECONDS,
                                 self.transport.abort)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        transport = _HeadWithBody(cycle.transport)
        cycle.transport = transport

        async def send_head_with_body(send: Any, message: Any) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                transport.hold_next = True
                try:
                    await send(message)
                finally:
                    transport.hold_next = False
                return
            await send(message)
            if kind == "http.response.body":
                transport.flush()  # a HEAD answer, which writes no body

        async def cut_when_cancelled(scope: Any, receive: Any, send: Any) -> None:
            """A request still running when the shutdown grace ends is cancelled by uvicorn,
            which would answer it 500 and log a traceback: it is cut instead, as a client
            would see a server that went away."""
            try:
                await app(scope, receive, functools.partial(send_head_with_body, send))
            except asyncio.CancelledError:
                log.warning("cut %s %s: still running when the shutdown grace ended",
                            scope.get("method"), scope.get("path"))
                cycle.disconnected = True
                self.transport.abort()

        super()._start_asgi_task(cycle, cut_when_cancelled)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_all()
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_all()
        super().connection_lost(exc)

    def _cancel(self, name: str) -> None:
        timer: TimerHandle | None = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _cancel_all(self) -> None:
        for name in ("_head_timer", "_body_timer", "_write_timer"):
            self._cancel(name)
