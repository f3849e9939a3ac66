"""The change log: every object create, overwrite and delete, durable and in commit order.

Writers call :func:`record` inside the transaction that changes the object, as its last
statement: it takes the next numbers from ``change_counter``, whose row lock is held until
that transaction commits. Two commits therefore never interleave their numbers, and a
reader whose snapshot shows ``change_counter.value = n`` sees every change up to ``n`` —
a cursor never skips a change that commits later with a smaller number (which a plain
auto-increment id allows on PostgreSQL).

Readers page by ``seq`` (keyset); :class:`ChangeHub` wakes the waiters of this process when
a change commits here, and they poll the database for changes made by other instances.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from gateway.metadata.models import change_counter, changes
from gateway.service.listing import successor
from gateway.types import MAX_SQL_INT

EVENT_PUT = "s3:ObjectCreated:Put"
EVENT_POST = "s3:ObjectCreated:Post"
EVENT_COPY = "s3:ObjectCreated:Copy"
EVENT_COMPLETE = "s3:ObjectCreated:CompleteMultipartUpload"
EVENT_DELETE = "s3:ObjectRemoved:Delete"
EVENT_DELETE_MARKER = "s3:ObjectRemoved:DeleteMarkerCreated"
EVENT_EXPIRED = "s3:LifecycleExpiration:Delete"
EVENT_EXPIRED_MARKER = "s3:LifecycleExpiration:DeleteMarkerCreated"
EVENTS = (EVENT_PUT, EVENT_POST, EVENT_COPY, EVENT_COMPLETE, EVENT_DELETE,
          EVENT_DELETE_MARKER, EVENT_EXPIRED, EVENT_EXPIRED_MARKER)

_CURSOR_PREFIX = "c1:"


@dataclass(frozen=True, slots=True)
class Entry:
    """One change to record: what the object is after it (nothing for a delete)."""

    key: str
    event: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    bucket: str
    key: str
    event: str
    size: int | None
    etag: str | None
    version_id: str | None
    time: datetime

    def as_event(self) -> dict[str, Any]:
        """The JSON event webhooks and ``/ws`` deliver, and the change feed lists."""
        return {"sequence": self.seq, "event": self.event, "bucket": self.bucket,
                "key": self.key, "size": self.size,
                "etag": f'"{self.etag}"' if self.etag else None,
                "version_id": self.version_id,
                "time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z")}


# Built once: every write unit records its change (building costs more than running).
_ADVANCE = (update(change_counter).where(change_counter.c.id == 1)
            .values(value=change_counter.c.value + bindparam("n"))
            .returning(change_counter.c.value))
_APPEND = insert(changes)


def record(conn: Connection, bucket_id: int, bucket: str, entries: Sequence[Entry],
           now: datetime | None = None) -> int:
    """Append ``entries`` in this transaction; the last sequence number (0 for none).
    Call it last in the unit: the counter's row stays locked until the commit."""
    if not entries:
        return 0
    n = len(entries)
    last = int(conn.execute(_ADVANCE, {"n": n}).scalar_one())
    when = now or datetime.now(UTC)
    rows = [{"seq": last - n + 1 + i, "bucket_id": bucket_id, "bucket": bucket, "key": e.key,
             "event": e.event, "size": e.size, "etag": e.etag, "version_id": e.version_id,
             "created_at": when}
            for i, e in enumerate(entries)]
    conn.execute(_APPEND, rows if n > 1 else rows[0])
    return last


def head(conn: Connection) -> int:
    """The last sequence number handed out (committed, in this snapshot)."""
    return int(conn.execute(select(change_counter.c.value)
                            .where(change_counter.c.id == 1)).scalar_one())


def _row(row: Any) -> Change:
    return Change(seq=row.seq, bucket=row.bucket, key=row.key, event=row.event, size=row.size,
                  etag=row.etag, version_id=row.version_id, time=row.created_at)


def page(conn: Connection, *, after: int, limit: int, bucket: str | None = None,
         prefix: str = "") -> tuple[list[Change], int]:
    """Up to ``limit`` changes after ``after`` (in ``bucket``, under ``prefix``), and the
    cursor position to resume from: the last change returned, or — when fewer than
    ``limit`` matched — the head of the log, since nothing up to it is still to come."""
    top = head(conn)
    cond = [changes.c.seq > after, changes.c.seq <= top]
    if bucket is not None:
        cond.append(changes.c.bucket == bucket)
    if prefix:
        cond.append(changes.c.key >= prefix)
        upper = successor(prefix)
        if upper is not None:
            cond.append(changes.c.key < upper)
    rows = conn.execute(select(changes).where(and_(*cond)).order_by(changes.c.seq)
                        .limit(limit)).all()
    found = [_row(r) for r in rows]
    resume = found[-1].seq if len(found) == limit else max(top, after)
    return found, resume


def purge(conn: Connection, before: datetime) -> int:
    """Forget changes recorded before ``before`` (the retention period)."""
    return int(conn.execute(delete(changes).where(changes.c.created_at < before)).rowcount)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor names; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a change-feed cursor") from None
    digits = raw[len(_CURSOR_PREFIX):]
    if not raw.startswith(_CURSOR_PREFIX) or not digits.isascii() or not digits.isdigit() \
            or len(digits) > 19 or int(digits) > MAX_SQL_INT:
        raise ValueError("not a change-feed cursor")
    return int(digits)


class ChangeHub:
    """Wakes whoever waits for changes in this process: the webhook dispatcher, ``/ws``
    subscribers and long-polling feed readers. Changes committed by other instances are
    found by polling (``wait`` returns after ``within`` seconds either way)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.last_seq = 0

    def notify(self, seq: int) -> None:
        if seq > self.last_seq:
            self.last_seq = seq
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, within: float) -> bool:
        """True when a change committed here within ``within`` seconds."""
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), within)
        except TimeoutError:
            return False
        return True
