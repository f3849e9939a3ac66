"""``/ws``: the change log, live, over a WebSocket.

Protocol (JSON text messages; every message has a ``type``):

- **Authentication**, with the JSON API's credentials: ``Authorization: Bearer <token>`` or
  ``X-Api-Key`` on the upgrade request, or — for browsers, which cannot set headers — a
  first message ``{"type": "auth", "token": "<API token or session token>"}`` within
  :data:`AUTH_TIMEOUT` seconds. The server then says ``{"type": "authenticated", "user":
  <name>}``. Missing or bad credentials close the socket with :data:`CLOSE_UNAUTHORIZED`;
  a credential without ``storage:read`` with :data:`CLOSE_FORBIDDEN`. No ``Origin`` is
  required: a browser page can only authenticate with a token it holds anyway.
- ``{"type": "subscribe", "bucket": "b", "prefix": "p/", "since": "<cursor>"}`` (``prefix``
  and ``since`` optional; without ``since``, or ``"now"``: from now; a cursor from an event,
  a ``subscribed`` answer or ``GET /api/v1/storage/changes``: what came after it; a cursor
  older than the retention period is refused with ``"reason": "expired"``, since changes
  after it are lost) → ``{"type": "subscribed", "id": n,
  "bucket": "b", "prefix": "p/", "cursor": "<cursor>"}``, if the caller may read the bucket
  (the same check as S3 and the Storage API), else ``{"type": "error", "code":
  "FORBIDDEN" | "NOT_FOUND", …}``.
- ``{"type": "unsubscribe", "id": n}`` → ``{"type": "unsubscribed", "id": n}``;
  ``{"type": "ping"}`` → ``{"type": "pong"}``.
- Events: ``{"type": "event", "subscription": n, "cursor": "<cursor after this change>",
  **Change.as_event()}``, in sequence order per subscription; a ``since`` cursor replays
  what came after it first (the change log keeps changes for ``change_retention``).
- Errors: ``{"type": "error", "code": <the API's error codes>, "message": …}``, plus the
  ``request`` type and ``bucket`` / ``id`` they are about.

One :class:`ChangeFanout` per process reads new changes once for every socket (woken by
``ctx.hub`` for commits in this process, polling every :data:`POLL_SECONDS` for other
instances'); a subscription first catches up from its own cursor with its own queries,
then joins the shared stream. Each socket has a bounded :class:`Outbox`: a client that does
not keep up is closed with :data:`CLOSE_LAGGING` and resubscribes with the cursor of the
last event it received, so a slow reader never grows the server's memory.

Access is checked when subscribing, and again before events are sent (one check per batch
of messages taken from the outbox, begun after the batch's events were queued): once the
credential is revoked or expires, its session ends or its user is disabled, the socket is
closed with :data:`CLOSE_UNAUTHORIZED` and nothing more is sent; once the caller may no
longer read a subscription's bucket (a grant revoked, the bucket deleted — and perhaps made
again by someone else), that subscription ends with ``{"type": "error", "code":
"FORBIDDEN" | "NOT_FOUND", "reason": "access_lost", "id": n, "bucket": "b"}`` and its
pending events are dropped. When access cannot be checked (the database is unreachable),
the socket is closed with :data:`CLOSE_UNAVAILABLE`, to be resumed from the last cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway import errors
from gateway.api.auth import ROLE_PERMISSIONS, Caller
from gateway.api.errors import as_api_error
from gateway.logs import PRINCIPAL_SCOPE_KEY
from gateway.metadata.models import changes as changes_table
from gateway.service import changes
from gateway.service.changes import Change
from gateway.service.context import Context
from gateway.service.sessions import SESSION_PREFIX
from gateway.service.tokens import TOKEN_PREFIX

if TYPE_CHECKING:
    from gateway.core import Gateway

log = logging.getLogger("gateway.ws")

#: Seconds a client without credentials on the upgrade has to send its ``auth`` message.
AUTH_TIMEOUT = 10.0
#: How often the shared reader polls the database for other instances' changes.
POLL_SECONDS = 0.5
#: Messages waiting for one socket at most; more and the client is lagging.
OUTBOX_LIMIT = 1000
#: Changes read per query (shared reads and catch-up reads alike).
PAGE = 200
#: Subscriptions one socket may hold.
MAX_SUBSCRIPTIONS = 100
#: The permission a credential needs.
PERMISSION = "storage:read"

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_LAGGING = 4429
#: The gateway is starting or stopping, or cannot check access (the standard "try again
#: later").
CLOSE_UNAVAILABLE = 1013
_UNCHECKED = "access cannot be checked now: resubscribe with since = the cursor of your last event"

#: The shortest pause between two shared reads (a burst of commits wakes the reader once
#: per commit).
_MIN_READ_GAP = 0.05


# -- per socket ------------------------------------------------------------------------------


class Outbox:
    """The messages waiting to be sent to one socket: at most ``limit``. Live events are
    offered without waiting (the shared reader never waits for one client); once one
    does not fit the outbox has *overflowed* and takes nothing more."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self.limit = limit
        self._items: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self.overflowed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, message: dict[str, Any]) -> bool:
        if self.overflowed.is_set():
            return False
        if len(self._items) >= self.limit:
            self.overflowed.set()
            self._ready.set()
            self._room.set()
            return False
        self._items.append(message)
        self._ready.set()
        return True

    async def room(self, n: int) -> None:
        """Wait until ``n`` more messages fit (or the outbox overflowed)."""
        n = min(n, self.limit)
        while self.limit - len(self._items) < n and not self.overflowed.is_set():
            self._room.clear()
            await self._room.wait()

    async def take(self) -> dict[str, Any] | None:
        """The next message; None once the outbox overflowed."""
        while not self._items:
            if self.overflowed.is_set():
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed.is_set():
            return None
        message = self._items.popleft()
        self._room.set()
        return message

    async def take_all(self) -> list[dict[str, Any]] | None:
        """The next message and every other one waiting; None once the outbox overflowed."""
        first = await self.take()
        if first is None:
            return None
        batch = [first, *self._items]
        self._items.clear()
        self._room.set()
        return batch


@dataclass(eq=False)
class Subscription:
    id: int
    bucket: str
    prefix: str
    #: Every change up to here has been considered (sent, or filtered out).
    cursor: int
    outbox: Outbox
    #: Fed by the shared reader (else still catching up on its own).
    live: bool = False
    ended: bool = False

    def matches(self, change: Change) -> bool:
        return change.seq > self.cursor and change.key.startswith(self.prefix)

    def push(self, change: Change) -> None:
        self.outbox.offer({"type": "event", "subscription": self.id,
                           "cursor": changes.encode_cursor(change.seq), **change.as_event()})
        self.cursor = change.seq


# -- per process -----------------------------------------------------------------------------


class ChangeFanout:
    """Reads the change log once for all of this process's subscriptions."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        #: Every change up to here has been handed to the live subscriptions. It starts
        #: at 0 and jumps to the lowest live cursor at the first read.
        self.position = 0
        self._by_bucket: dict[str, set[Subscription]] = {}
        self._live = asyncio.Event()

    def add(self, sub: Subscription) -> None:
        self._by_bucket.setdefault(sub.bucket, set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        sub.ended = True
        subs = self._by_bucket.get(sub.bucket)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_bucket[sub.bucket]

    def _live_subs(self) -> list[Subscription]:
        return [s for subs in self._by_bucket.values() for s in subs if s.live]

    async def run(self) -> None:
        """The shared reader: no queries at all while no subscription is live."""
        while True:
            live = self._live_subs()
            if not live:
                self._live.clear()
                await self._live.wait()
                continue
            started = time.monotonic()
            # Nothing at or below every live cursor concerns anyone: skip it. (Moved before
            # the read, so a subscription going live meanwhile catches up that far first.)
            self.position = max(self.position, min(s.cursor for s in live))
            after = self.position
            try:
                found, resume = await self.ctx.db.read(
                    functools.partial(changes.page, after=after, limit=PAGE))
            except Exception:
                log.exception("reading the change log failed; will retry")
                await asyncio.sleep(POLL_SECONDS)
                continue
            self.dispatch(found, resume)
            if len(found) == PAGE:
                continue
            if self.ctx.hub.last_seq <= self.position:  # else it committed during the read
                await self.ctx.hub.wait(POLL_SECONDS)
            await asyncio.sleep(max(0.0, _MIN_READ_GAP - (time.monotonic() - started)))

    def dispatch(self, found: list[Change], resume: int) -> None:
        """Hand ``found`` to the live subscriptions (no awaiting: subscriptions cannot go
        live half-way through)."""
        for change in found:
            for sub in self._by_bucket.get(change.bucket, ()):
                if sub.live and sub.matches(change):
                    sub.push(change)
        for sub in self._live_subs():
            sub.cursor = max(sub.cursor, resume)
        self.position = max(self.position, resume)

    async def catch_up(self, sub: Subscription) -> None:
        """Send ``sub`` what came after its cursor, at the pace its client reads, until it
        reaches the shared reader, then hand it over."""
        # Pages of at most half the outbox: they always fit once the client has read
        # enough, with room left for the live events of the socket's other subscriptions.
        chunk = max(1, min(PAGE, sub.outbox.limit // 2))
        #: Whether the last read reached the head of the log: only then may the shared
        #: reader take over (it hands out events without waiting for the client).
        at_head = False
        while not sub.ended:
            if at_head and sub.cursor >= self.position:
                sub.live = True
                self._live.set()
                return
            after = sub.cursor
            found, resume = await self.ctx.db.read(functools.partial(
                changes.page, after=after, limit=chunk, bucket=sub.bucket, prefix=sub.prefix))
            await sub.outbox.room(len(found))
            if sub.ended or sub.outbox.overflowed.is_set():
                return
            for change in found:
                if sub.matches(change):
                    sub.push(change)
            sub.cursor = max(sub.cursor, resume)
            at_head = len(found) < chunk


def _log_bounds(conn: Connection) -> tuple[int | None, int]:
    """The oldest sequence number still kept (None: none), and the head."""
    oldest = conn.execute(select(func.min(changes_table.c.seq))).scalar()
    return (int(oldest) if oldest is not None else None), changes.head(conn)


# -- authentication --------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


#: The credential a socket authenticated with, to check again later: ``("bearer", token)``
#: (the Authorization header or the first message) or ``("api_key", X-Api-Key value)``.
Credential = tuple[str, str]


async def reauthenticate(gw: Gateway, credential: Credential) -> Caller | None:
    """Who ``credential`` stands for now (None: revoked, expired, logged out, or its user
    disabled)."""
    how, value = credential
    if how == "api_key":
        found = await gw.tokens.authenticate(value)
        return Caller(found[0], found[1], "token") if found is not None else None
    return await caller_for_token(gw, value)


async def caller_for_token(gw: Gateway, token: str) -> Caller | None:
    """Who a bearer token (an API token, raw or Base64, or a session token) stands for."""
    token = token.strip()
    if not token:
        return None
    if token.startswith(SESSION_PREFIX) or not token.startswith(TOKEN_PREFIX):
        principal = await gw.sessions.authenticate(token)
        if principal is not None:
            return Caller(principal, ROLE_PERMISSIONS.get(principal.role, frozenset()),
                          "session")
    found = await gw.tokens.authenticate(token)
    return Caller(found[0], found[1], "token") if found is not None else None


async def caller_from_headers(gw: Gateway, headers: Mapping[str, str]
                              ) -> tuple[Caller, Credential] | None:
    """The caller named by the upgrade request's headers, and the credential that named
    them; None when the headers name none."""
    authorization = headers.get("authorization")
    api_key = headers.get("x-api-key")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(CLOSE_UNAUTHORIZED, "Authorization must be 'Bearer <token>'")
        credential: Credential = ("bearer", token)
    elif api_key is not None and api_key.strip():
        credential = ("api_key", api_key)
    else:
        return None
    caller = await reauthenticate(gw, credential)
    if caller is None:
        raise _Refused(CLOSE_UNAUTHORIZED, "invalid, expired or revoked credentials")
    return caller, credential


# -- the endpoint ----------------------------------------------------------------------------


def _error(code: str, message: str, **about: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message,
            **{k: v for k, v in about.items() if v is not None}}


@dataclass(eq=False)
class _Session:
    """One authenticated socket and its subscriptions."""

    gw: Gateway
    fanout: ChangeFanout
    caller: Caller
    credential: Credential
    outbox: Outbox = field(default_factory=Outbox)
    subs: dict[int, Subscription] = field(default_factory=dict)
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    next_id: int = 1

    def close(self) -> None:
        for sub in self.subs.values():
            self.fanout.remove(sub)
        for task in self.tasks.values():
            task.cancel()

    async def allowed(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``batch`` once access is checked again, if it holds events: without the events
        of subscriptions whose bucket the caller may no longer read (each such
        subscription ends, with an error message in its events' place). Raises _Refused
        when the credential no longer stands, or when access cannot be checked now (the
        database is unreachable): nothing is sent unchecked, and the client resumes from
        the cursor of its last event."""
        buckets = {m["bucket"] for m in batch if m.get("type") == "event"}
        if not buckets:
            return batch
        try:
            caller = await reauthenticate(self.gw, self.credential)
        except Exception:
            log.warning("could not check a socket's credentials again", exc_info=True)
            raise _Refused(CLOSE_UNAVAILABLE, _UNCHECKED) from None
        if caller is None or caller.principal.user_id != self.caller.principal.user_id:
            raise _Refused(CLOSE_UNAUTHORIZED, "the credentials were revoked or expired")
        if not caller.has(PERMISSION):
            raise _Refused(CLOSE_FORBIDDEN, f"this credential lacks the {PERMISSION} "
                                            "permission")
        self.caller = caller
        lost: dict[str, errors.GatewayError] = {}
        for bucket in buckets:
            try:
                await self.gw.objects.bucket(caller.principal, bucket, write=False)
            except (errors.AccessDenied, errors.NoSuchBucket) as exc:
                lost[bucket] = exc
            except Exception:
                log.warning("could not check a subscription's access again", exc_info=True)
                raise _Refused(CLOSE_UNAVAILABLE, _UNCHECKED) from None
        if not lost:
            return batch
        ended: list[dict[str, Any]] = []
        for sub in [s for s in self.subs.values() if s.bucket in lost]:
            self.end(sub)
            refused = as_api_error(lost[sub.bucket], "")
            ended.append(_error(refused.code, "Access to the bucket was lost; the "
                                "subscription has ended", reason="access_lost", id=sub.id,
                                bucket=sub.bucket))
        return [m for m in batch if not (m.get("type") == "event" and m["bucket"] in lost)
                ] + ended

    def end(self, sub: Subscription) -> None:
        self.subs.pop(sub.id, None)
        self.fanout.remove(sub)
        task = self.tasks.pop(sub.id, None)
        if task is not None:
            task.cancel()

    async def handle(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.outbox.offer(_error("VALIDATION_ERROR", "Messages are JSON objects"))
            return
        kind = message.get("type")
        if kind == "subscribe":
            await self.subscribe(message)
        elif kind == "unsubscribe":
            self.unsubscribe(message)
        elif kind == "ping":
            self.outbox.offer({"type": "pong"})
        elif kind == "auth":
            self.outbox.offer(_error("VALIDATION_ERROR", "Already authenticated",
                                     request="auth"))
        else:
            self.outbox.offer(_error(
                "VALIDATION_ERROR", "type must be one of subscribe, unsubscribe, ping",
                request=kind if isinstance(kind, str) else None))

    async def subscribe(self, message: dict[str, Any]) -> None:
        bucket, prefix, since = (message.get("bucket"), message.get("prefix", ""),
                                 message.get("since"))
        about: dict[str, Any] = {"request": "subscribe",
                                 "bucket": bucket if isinstance(bucket, str) else None}
        if not isinstance(bucket, str) or not bucket:
            self.outbox.offer(_error("VALIDATION_ERROR", "bucket is required", **about))
            return
        if prefix is None:
            prefix = ""
        if not isinstance(prefix, str):
            self.outbox.offer(_error("VALIDATION_ERROR", "prefix must be a string", **about))
            return
        start: int | None = None
        if since is not None and since not in ("", "now"):
            try:
                start = changes.decode_cursor(since) if isinstance(since, str) else -1
            except ValueError:
                start = -1
            if start < 0:
                self.outbox.offer(_error("VALIDATION_ERROR", "since is not a cursor", **about))
                return
        if len(self.subs) >= MAX_SUBSCRIPTIONS:
            self.outbox.offer(_error("VALIDATION_ERROR",
                                     f"At most {MAX_SUBSCRIPTIONS} subscriptions per socket",
                                     **about))
            return
        try:
            await self.gw.objects.bucket(self.caller.principal, bucket, write=False)
        except errors.GatewayError as exc:
            refused = as_api_error(exc, "")
            self.outbox.offer(_error(refused.code, refused.message, **about))
            return
        oldest, head = await self.gw.ctx.db.read(_log_bounds)
        if start is None:
            start = head
        elif start > head:
            self.outbox.offer(_error("VALIDATION_ERROR",
                                     "since is ahead of this gateway's change log", **about))
            return
        elif start < head and (oldest if oldest is not None else head + 1) > start + 1:
            self.outbox.offer(_error(
                "VALIDATION_ERROR", "Changes after this cursor are past the retention "
                "period: list the bucket again, then subscribe without since",
                field="since", reason="expired", **about))
            return
        sub = Subscription(self.next_id, bucket, prefix, start, self.outbox)
        self.next_id += 1
        self.subs[sub.id] = sub
        self.outbox.offer({"type": "subscribed", "id": sub.id, "bucket": bucket,
                           "prefix": prefix, "cursor": changes.encode_cursor(start)})
        self.fanout.add(sub)
        self.tasks[sub.id] = asyncio.create_task(self._catch_up(sub))

    async def _catch_up(self, sub: Subscription) -> None:
        try:
            await self.fanout.catch_up(sub)
        except Exception:
            log.exception("replaying changes for a subscription failed")
            self.fanout.remove(sub)
            self.subs.pop(sub.id, None)
            self.outbox.offer(_error("SERVER_ERROR", "The subscription failed; resubscribe",
                                     request="subscribe", id=sub.id))
        finally:
            self.tasks.pop(sub.id, None)

    def unsubscribe(self, message: dict[str, Any]) -> None:
        sub_id = message.get("id")
        sub = self.subs.pop(sub_id, None) if isinstance(sub_id, int) else None
        if sub is None:
            self.outbox.offer(_error("NOT_FOUND", "No such subscription",
                                     request="unsubscribe", id=sub_id))
            return
        self.fanout.remove(sub)
        task = self.tasks.pop(sub.id, None)
        if task is not None:
            task.cancel()
        self.outbox.offer({"type": "unsubscribed", "id": sub.id})


class ChangeSocket:
    """The ``/ws`` endpoint of one application, and its shared reader while it runs."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None
        self.fanout: ChangeFanout | None = None

    def start(self, gateway: Gateway) -> asyncio.Task[None]:
        """Serve ``gateway``; the shared reader's task (the lifespan cancels it)."""
        self.gateway = gateway
        self.fanout = ChangeFanout(gateway.ctx)
        return asyncio.create_task(self.fanout.run())

    def stop(self) -> None:
        self.gateway = None
        self.fanout = None

    async def endpoint(self, websocket: WebSocket) -> None:
        gw, fanout = self.gateway, self.fanout
        await websocket.accept()
        if gw is None or fanout is None:
            await websocket.close(CLOSE_UNAVAILABLE, "the gateway is starting or stopping")
            return
        try:
            found = await caller_from_headers(gw, websocket.headers)
            caller, credential = found or await self._first_message(gw, websocket)
            if not caller.has(PERMISSION):
                raise _Refused(CLOSE_FORBIDDEN,
                               f"this credential lacks the {PERMISSION} permission")
        except _Refused as refused:
            await websocket.close(refused.code, refused.reason)
            return
        except WebSocketDisconnect:
            return
        websocket.scope[PRINCIPAL_SCOPE_KEY] = caller.principal.name
        session = _Session(gw, fanout, caller, credential)
        session.outbox.offer({"type": "authenticated", "user": caller.principal.name})
        try:
            await self._serve(websocket, session)
        finally:
            session.close()

    @staticmethod
    async def _first_message(gw: Gateway, websocket: WebSocket
                             ) -> tuple[Caller, Credential]:
        try:
            async with asyncio.timeout(AUTH_TIMEOUT):
                raw = await websocket.receive_text()
        except TimeoutError:
            raise _Refused(CLOSE_UNAUTHORIZED, "authentication required") from None
        except KeyError:  # a binary frame
            raise _Refused(CLOSE_UNAUTHORIZED, "authentication required") from None
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict) or message.get("type") != "auth":
            raise _Refused(CLOSE_UNAUTHORIZED, 'authentication required: send {"type": '
                           '"auth", "token": …} first')
        token = message.get("token")
        credential: Credential = ("bearer", token if isinstance(token, str) else "")
        caller = await reauthenticate(gw, credential)
        if caller is None:
            raise _Refused(CLOSE_UNAUTHORIZED, "invalid, expired or revoked credentials")
        return caller, credential

    async def _serve(self, websocket: WebSocket, session: _Session) -> None:
        """Until the client leaves or falls behind: its messages in, the outbox out."""
        receiver = asyncio.create_task(self._receive(websocket, session))
        sender = asyncio.create_task(self._send(websocket, session))
        lagging = asyncio.create_task(session.outbox.overflowed.wait())
        tasks = (receiver, sender, lagging)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        ending: _Refused | None = None
        if sender in done and not sender.cancelled() and sender.exception() is None:
            ending = sender.result()
        if ending is None and lagging in done:
            ending = _Refused(CLOSE_LAGGING,
                              "lagging: resubscribe with since = the cursor of your last event")
        if ending is not None and websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await websocket.close(ending.code, ending.reason)

    @staticmethod
    async def _receive(websocket: WebSocket, session: _Session) -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                session.outbox.offer(_error("VALIDATION_ERROR", "Messages are JSON text"))
                continue
            await session.handle(text)

    @staticmethod
    async def _send(websocket: WebSocket, session: _Session) -> _Refused | None:
        """Sends until the outbox overflows (None) or access is lost (why)."""
        while (batch := await session.outbox.take_all()) is not None:
            try:
                batch = await session.allowed(batch)
            except _Refused as refused:
                return refused
            for message in batch:
                await websocket.send_text(json.dumps(message, separators=(",", ":"),
                                                     ensure_ascii=False))
        return None
