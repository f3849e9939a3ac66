"""Webhook delivery: every change in a bot's bucket, POSTed to the bot's URL, in order.

Each enabled bot with a ``url`` and a ``bucket`` receives one POST per change in its bucket
with ``seq > bots.delivered_seq``, in sequence order. The body is the change's event
(:meth:`Change.as_event`) plus ``"bot": <bot id>``; ``X-Gateway-Signature`` is
``sha256=<hex HMAC-SHA256 of the body bytes under the bot's secret>``.

- **Order, per bot.** A bot's next change is sent only once the previous one was answered
  with a 2xx; anything else (another status, a redirect — never followed —, a timeout, a
  refused connection) counts an error on the bot (``error_count``: *consecutive* errors, as
  the Talk bots reference defines it; ``last_error_date`` / ``last_error_message``) and
  defers it by an exponential backoff with jitter (1 s, 2 s, 4 s … up to
  ``webhook_max_backoff``), with every later change waiting behind it. A success advances
  ``delivered_seq`` and resets ``error_count`` (the last error stays, for history).
- **At least once.** ``delivered_seq`` moves after the receiver's answer, so a crash in
  between sends that change again: receivers de-duplicate by ``X-Gateway-Sequence``.
  ``delivered_seq`` only moves from the value a delivery started from, so two deliverers
  (a lease handed over while a POST was in flight) never move it backwards.
- **Bots are independent.** Each bot with something to deliver has its own worker; POSTs
  to different bots run concurrently (:data:`CONCURRENCY` at a time), so a slow or failing
  receiver delays only its own bot.
- **One instance delivers**: the one holding the ``webhooks`` lease (:mod:`gateway.service.
  jobs`), renewed while it delivers and released when it stops. It wakes when a change
  commits in this process (``ctx.hub``) and polls the database every second for changes
  committed by other instances and for retries that fell due.
- **Retention.** The same instance purges changes older than ``change_retention`` — but
  never one a bot still has to receive: the purge stops at the oldest change not yet
  delivered to an enabled bot with a URL, so a bot whose receiver was down for longer than
  the retention still gets its whole backlog. (Disabling such a bot, or clearing its URL,
  lets the purge go on.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata as importlib_metadata

import httpx
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection

from gateway.auth.credentials import SecretBox
from gateway.metadata.models import bots, changes
from gateway.service import changes as change_log
from gateway.service.changes import Change
from gateway.service.context import Context
from gateway.service.egress import (
    AddressNotAllowed,
    AddressPolicy,
    parse_networks,
    policed_transport,
)
from gateway.service.jobs import Jobs

log = logging.getLogger("gateway.webhooks")

#: The job lease under which one instance delivers.
LEASE = "webhooks"
#: How often the lease is renewed; another instance takes over after three silent periods.
LEASE_PERIOD = 5.0
#: How often the database is polled for changes committed by other instances.
POLL_SECONDS = 1.0
#: POSTs in flight at once, over all bots.
CONCURRENCY = 8
#: Changes a bot's worker reads at a time.
BATCH = 50
#: ``bots.state`` of an enabled bot (the Talk bots reference's constant).
STATE_ENABLED = 1
#: How much of a failing receiver's answer ``last_error_message`` keeps.
ERROR_BODY_CHARS = 200
#: The shortest and longest pause between two purges of the change log.
_PURGE_MIN_SECONDS = 1.0
_PURGE_MAX_SECONDS = 300.0
#: The shortest pause between two looks for due bots (a burst of writes wakes the
#: dispatcher once per commit).
_MIN_PASS_GAP = 0.05


def _user_agent() -> str:
    try:
        version = importlib_metadata.version("gateway")
    except importlib_metadata.PackageNotFoundError:
        version = "0"
    return f"gateway-webhooks/{version}"


USER_AGENT = _user_agent()


@dataclass(frozen=True, slots=True)
class Target:
    """A bot with changes to deliver, as read at the start of a batch."""

    id: str
    url: str
    sealed_secret: str
    bucket: str
    delivered_seq: int
    error_count: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one POST went: delivered, or the error to record (never naming the secret)."""

    delivered: bool
    error: str | None = None


def event_body(bot_id: str, change: Change) -> bytes:
    """The exact bytes POSTed (and signed) for ``change``."""
    return json.dumps({**change.as_event(), "bot": bot_id}, separators=(",", ":"),
                      ensure_ascii=False).encode()


def sign(secret: str, body: bytes) -> str:
    """The ``X-Gateway-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_headers(secret: str, body: bytes, change: Change) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Gateway-Signature": sign(secret, body),
        "X-Gateway-Event": change.event,
        "X-Gateway-Sequence": str(change.seq),
        #: Unique per attempt; a retry of the same change has the same sequence.
        "X-Gateway-Delivery": str(uuid.uuid4()),
    }


def backoff_seconds(error_count: int, cap: float,
                    rand: Callable[[], float] = random.random) -> float:
    """The wait after the ``error_count``-th consecutive error: 1 s, 2 s, 4 s … at most
    ``cap``, each within ±20 % so that bots failing together do not retry together."""
    base = min(cap, 2.0 ** max(0, error_count - 1))
    return float(min(cap, base * (0.8 + 0.4 * rand())))


def _refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "refused" in str(exc).lower()


def describe_failure(exc: BaseException, timeout: float) -> str:
    """A short description of a failed POST for ``last_error_message``."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"timeout: no answer within {timeout:g} s"
    if isinstance(exc, httpx.ConnectError):
        if isinstance(exc.__cause__, AddressNotAllowed):
            return str(exc.__cause__)[:300]
        return "connection refused" if _refused(exc) else f"connection failed: {exc}"[:300]
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}"[:300]
    return f"delivery failed: {type(exc).__name__}"


# -- the database side -----------------------------------------------------------------------

_ELIGIBLE = and_(bots.c.state == STATE_ENABLED, bots.c.url.is_not(None), bots.c.url != "")


def _due_bots(conn: Connection, now: datetime) -> list[Target]:
    """Enabled bots with a URL, a bucket, no backoff in force and a change to deliver."""
    pending = (select(changes.c.seq)
               .where(changes.c.bucket == bots.c.bucket,
                      changes.c.seq > bots.c.delivered_seq)
               .exists())
    rows = conn.execute(
        select(bots.c.id, bots.c.url, bots.c.secret, bots.c.bucket, bots.c.delivered_seq,
               bots.c.error_count)
        .where(_ELIGIBLE, bots.c.bucket.is_not(None),
               or_(bots.c.next_attempt_at.is_(None), bots.c.next_attempt_at <= now),
               pending)).all()
    return [Target(r.id, r.url, r.secret, r.bucket, int(r.delivered_seq), int(r.error_count))
            for r in rows]


def _target(conn: Connection, bot_id: str, now: datetime) -> Target | None:
    """The bot, if it is still to be delivered to now."""
    r = conn.execute(
        select(bots.c.id, bots.c.url, bots.c.secret, bots.c.bucket, bots.c.delivered_seq,
               bots.c.error_count)
        .where(bots.c.id == bot_id, _ELIGIBLE, bots.c.bucket.is_not(None),
               or_(bots.c.next_attempt_at.is_(None), bots.c.next_attempt_at <= now))).first()
    if r is None:
        return None
    return Target(r.id, r.url, r.secret, r.bucket, int(r.delivered_seq), int(r.error_count))


def _delivered(conn: Connection, bot_id: str, old: int, seq: int) -> bool:
    """Advance ``delivered_seq`` from ``old`` to ``seq``; False if it was no longer ``old``."""
    done = conn.execute(
        update(bots).where(bots.c.id == bot_id, bots.c.delivered_seq == old)
        .values(delivered_seq=seq, error_count=0, next_attempt_at=None))
    return done.rowcount == 1


def _failed(conn: Connection, bot_id: str, old: int, message: str, now: datetime,
            retry_at: datetime) -> None:
    conn.execute(
        update(bots).where(bots.c.id == bot_id, bots.c.delivered_seq == old)
        .values(error_count=bots.c.error_count + 1, last_error_date=now,
                last_error_message=message, next_attempt_at=retry_at))


def purge_changes(conn: Connection, now: datetime, retention_seconds: int) -> int:
    """Forget changes older than the retention, but none an enabled bot with a URL has
    still to receive: the cut stops at the oldest such change (by time, since that is how
    the log is purged; times follow sequence order only roughly, so it is the oldest of
    all of them, not the first by sequence)."""
    before = now - timedelta(seconds=retention_seconds)
    oldest_pending = conn.execute(
        select(func.min(changes.c.created_at))
        .select_from(changes.join(bots, changes.c.bucket == bots.c.bucket))
        .where(_ELIGIBLE, changes.c.seq > bots.c.delivered_seq)).scalar()
    if oldest_pending is not None:
        if oldest_pending.tzinfo is None:
            oldest_pending = oldest_pending.replace(tzinfo=UTC)
        before = min(before, oldest_pending)
    return change_log.purge(conn, before)


# -- the dispatcher --------------------------------------------------------------------------


class _LeaseLost(Exception):
    pass


class WebhookDispatcher:
    """Delivers the change log to bots' webhooks; :meth:`run` is the background task."""

    def __init__(self, ctx: Context, jobs: Jobs, box: SecretBox, *,
                 concurrency: int = CONCURRENCY) -> None:
        self.ctx = ctx
        self.jobs = jobs
        self.box = box
        self.concurrency = concurrency
        #: Bots whose worker is running (on this instance).
        self._busy: set[str] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self.policy = AddressPolicy(parse_networks(ctx.settings.webhook_allowed_networks))

    @property
    def timeout(self) -> float:
        return float(self.ctx.settings.webhook_timeout)

    # -- the lease ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: take the ``webhooks`` lease when it is free, deliver while holding it.
        Cancelling this (shutdown) gives the lease up for another instance to take."""
        try:
            while True:
                try:
                    if await self.jobs.claim(LEASE, LEASE_PERIOD):
                        await self._lead()
                except Exception:
                    log.exception("webhook delivery failed; will retry")
                await asyncio.sleep(LEASE_PERIOD)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.jobs.release(LEASE))

    async def _lead(self) -> None:
        """Deliver until the lease is lost (returns) or the task is cancelled."""
        # Redirects are answers like any other non-2xx (a receiver that moved says so in
        # its error). The environment's proxies and .netrc are not used: credentials of
        # the gateway's host must never reach a bot's URL. Connections go to public
        # addresses only (gateway.service.egress).
        async with httpx.AsyncClient(transport=policed_transport(self.policy),
                                     follow_redirects=False, trust_env=False) as client:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._keep_lease())
                    group.create_task(self._dispatch(client, group))
            except* _LeaseLost:
                log.warning("lost the webhooks lease; another instance delivers now")

    async def _keep_lease(self) -> None:
        """Renew the lease every period; raise :class:`_LeaseLost` when another instance
        holds it, or when renewals kept failing until it may have expired."""
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(LEASE_PERIOD)
            try:
                held = await self.jobs.claim(LEASE, LEASE_PERIOD)
            except Exception:
                log.warning("could not renew the webhooks lease", exc_info=True)
                held = time.monotonic() - renewed < 2 * LEASE_PERIOD
            else:
                if held:
                    renewed = time.monotonic()
            if not held:
                raise _LeaseLost

    async def _dispatch(self, client: httpx.AsyncClient, group: asyncio.TaskGroup) -> None:
        purge_every = min(_PURGE_MAX_SECONDS, max(
            _PURGE_MIN_SECONDS, self.ctx.settings.change_retention_seconds / 10))
        purged = -purge_every
        while True:
            started = time.monotonic()
            seen = self.ctx.hub.last_seq
            if started - purged >= purge_every:
                purged = started
                try:
                    await self.purge()
                except Exception:
                    log.exception("purging the change log failed; will retry")
            try:
                self.start_due(client, group, await self.due())
            except Exception:
                log.exception("looking for webhook deliveries failed; will retry")
            if self.ctx.hub.last_seq == seen:  # else one committed during the pass
                await self.ctx.hub.wait(POLL_SECONDS)
            await asyncio.sleep(max(0.0, _MIN_PASS_GAP - (time.monotonic() - started)))

    # -- one pass ----------------------------------------------------------------------------

    async def due(self) -> list[Target]:
        """The bots that have something to deliver now."""
        now = datetime.now(UTC)
        return await self.ctx.db.read(lambda conn: _due_bots(conn, now))

    def start_due(self, client: httpx.AsyncClient, group: asyncio.TaskGroup,
                  targets: list[Target]) -> None:
        for target in targets:
            if target.id not in self._busy:
                self._busy.add(target.id)
                group.create_task(self._worker(client, target.id))

    async def purge(self) -> int:
        """Purge the change log (see the module's notes on retention)."""
        now = datetime.now(UTC)
        retention = self.ctx.settings.change_retention_seconds
        purged = await self.ctx.db.write(lambda conn: purge_changes(conn, now, retention))
        if purged:
            log.info("purged %d changes older than the retention", purged)
        return purged

    # -- one bot -----------------------------------------------------------------------------

    async def _worker(self, client: httpx.AsyncClient, bot_id: str) -> None:
        """Deliver the bot's backlog in order until it is empty or a delivery fails."""
        try:
            while await self.deliver_batch(client, bot_id):
                pass
        except Exception:
            log.exception("webhook delivery to bot %s failed; will retry", bot_id)
        finally:
            self._busy.discard(bot_id)

    async def deliver_batch(self, client: httpx.AsyncClient, bot_id: str) -> bool:
        """Deliver up to :data:`BATCH` of the bot's changes; whether to go on at once."""
        now = datetime.now(UTC)
        target = await self.ctx.db.read(lambda conn: _target(conn, bot_id, now))
        if target is None:
            return False
        found, _ = await self.ctx.db.read(lambda conn: change_log.page(
            conn, after=target.delivered_seq, limit=BATCH, bucket=target.bucket))
        if not found:
            return False
        try:
            secret = self.box.open(target.sealed_secret)
        except Exception:
            await self._record_failure(target, target.delivered_seq,
                                       "cannot decrypt the webhook secret", target.error_count)
            return False
        old, errors = target.delivered_seq, target.error_count
        for change in found:
            outcome = await self.post(client, target, secret, change)
            if not outcome.delivered:
                await self._record_failure(target, old, outcome.error or "failed", errors)
                return False
            advanced = await self.ctx.db.write(
                functools.partial(_delivered, bot_id=bot_id, old=old, seq=change.seq))
            if not advanced:
                return False  # changed meanwhile (reset, or another deliverer): re-read
            old, errors = change.seq, 0
        return len(found) == BATCH

    async def post(self, client: httpx.AsyncClient, target: Target, secret: str,
                   change: Change) -> Outcome:
        """One POST of one change; the answer is read only as far as an error message
        needs it."""
        body = event_body(target.id, change)
        headers = delivery_headers(secret, body, change)
        timeout = self.timeout
        async with self._slots:
            try:
                async with asyncio.timeout(timeout):
                    async with client.stream("POST", target.url, content=body,
                                             headers=headers, timeout=timeout) as response:
                        if 200 <= response.status_code < 300:
                            return Outcome(True)
                        return Outcome(False, await _status_message(response))
            except Exception as exc:
                message = describe_failure(exc, timeout)
                return Outcome(False, message.replace(secret, "***") if secret else message)

    async def _record_failure(self, target: Target, old: int, message: str,
                              errors_before: int) -> None:
        now = datetime.now(UTC)
        wait = backoff_seconds(errors_before + 1, self.ctx.settings.webhook_max_backoff_seconds)
        retry_at = now + timedelta(seconds=wait)
        log.info("webhook of bot %s failed (%s); retrying in %.1f s", target.id, message, wait)
        await self.ctx.db.write(
            lambda conn: _failed(conn, target.id, old, message, now, retry_at))


async def _status_message(response: httpx.Response) -> str:
    """``HTTP 500: <the start of the body>``, or where a redirect pointed."""
    status = response.status_code
    if 300 <= status < 400:
        where = response.headers.get("location", "")
        return f"HTTP {status}: redirect to {where[:ERROR_BODY_CHARS]} not followed"
    head = bytearray()
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_raw():
            head += chunk
            if len(head) >= 4 * ERROR_BODY_CHARS:
                break
    text = " ".join(head.decode("utf-8", "replace").split())[:ERROR_BODY_CHARS]
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"

