"""Bucket quotas, exact at write time.

A write first *reserves* what it may add (bytes from Content-Length, one object if the key
is new) with one conditional UPDATE that cannot overshoot however many writers race, on
SQLite or PostgreSQL alike. The commit moves usage by the real delta and drops the
reservation in the same transaction as the object row; a failure releases it. Uploaded
multipart parts count as used bytes from the moment they are recorded.

A reservation row names the gateway instance holding it. Instances beat a heartbeat; what
a silent one held (it crashed mid-upload) is released by the others or by its successor
after three missed heartbeats.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from gateway import errors
from gateway.metadata import repo
from gateway.service.context import Context, shielded
from gateway.types import MAX_SQL_INT, BucketRecord

log = logging.getLogger("gateway.quota")

#: Writes at least this large hold their quota before their bytes are taken; smaller ones
#: are checked up front and held to the limit by the commit alone.
HOLD_FROM_BYTES = 1024 * 1024
#: Stored in a limit column: no limit (NULL means "the settings' default").
UNLIMITED = -1
_UNSET: Any = object()


def _effective(stored: int | None, default: int | None) -> int | None:
    if stored is None:
        return default
    return None if stored < 0 else stored


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int | None
    max_objects: int | None
    max_object_size: int | None

    @property
    def unlimited(self) -> bool:
        return self.max_bytes is None and self.max_objects is None


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str | None  # None: nothing was held (no limit, or nothing to add)
    bucket_id: int
    bytes: int
    objects: int


NOTHING_HELD = Reservation(None, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class BucketUsage:
    bucket: str
    owner: str
    used_bytes: int
    used_objects: int
    reserved_bytes: int
    reserved_objects: int
    limits: Limits
    #: Which limits the bucket sets itself (the others follow the settings).
    overrides: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        lim = self.limits

        def percent(used: int, limit: int | None) -> float | None:
            if limit is None:
                return None
            return round(100.0 * used / limit, 2) if limit else 100.0

        return {
            "bucket": self.bucket, "owner": self.owner,
            "used_bytes": self.used_bytes, "used_objects": self.used_objects,
            "reserved_bytes": self.reserved_bytes, "reserved_objects": self.reserved_objects,
            "max_bytes": lim.max_bytes, "max_objects": lim.max_objects,
            "max_object_size": lim.max_object_size,
            "percent_bytes": percent(self.used_bytes, lim.max_bytes),
            "percent_objects": percent(self.used_objects, lim.max_objects),
            "overrides": list(self.overrides),
        }


_LIMIT_COLUMNS = {"max_bytes": "quota_bytes", "max_objects": "quota_objects",
                  "max_object_size": "max_object_size"}


class QuotaService:
    def __init__(self, ctx: Context, instance_id: str | None = None) -> None:
        self.ctx = ctx
        self.instance_id = instance_id or uuid.uuid4().hex
        #: Reservations whose release failed (the database was unavailable): retried at
        #: every heartbeat, so a live instance does not hold them for ever.
        self._unreleased: dict[str, Reservation] = {}

    # -- limits ----------------------------------------------------------------------------

    def limits(self, bucket: BucketRecord) -> Limits:
        s = self.ctx.settings
        return Limits(_effective(bucket.quota_bytes, s.default_quota_bytes),
                      _effective(bucket.quota_objects, s.default_quota_objects),
                      _effective(bucket.max_object_size, s.default_max_object_size))

    @property
    def _defaults(self) -> tuple[int, int]:
        s = self.ctx.settings
        b, o = s.default_quota_bytes, s.default_quota_objects
        return (UNLIMITED if b is None else b, UNLIMITED if o is None else o)

    def check_object_size(self, bucket: BucketRecord, size: int) -> None:
        limit = self.limits(bucket).max_object_size
        if limit is not None and size > limit:
            raise errors.EntityTooLarge(
                f"Your proposed upload exceeds the bucket's maximum object size of {limit} "
                "bytes.", fields={"ProposedSize": str(size), "MaxSizeAllowed": str(limit)})

    def require_size(self, bucket: BucketRecord, size: int | None, *,
                     bound: int | None = None) -> int:
        """The bytes to hold for a write of ``size`` (announced) or at most ``bound``.
        A write of unknown length cannot be held against a limit: S3 asks for one."""
        if size is not None:
            self.check_object_size(bucket, size)
            return size
        if bound is not None:
            return bound
        limits = self.limits(bucket)
        if limits.max_bytes is not None or limits.max_object_size is not None:
            raise errors.MissingContentLength()
        return 0

    async def check_upload_size(self, bucket: BucketRecord, upload_id: str,
                                part_number: int, size: int | None) -> None:
        """Refuse a part that would make its upload larger than the bucket's largest object
        before taking its bytes (CompleteMultipartUpload checks again, exactly)."""
        limit = self.limits(bucket).max_object_size
        if limit is None or size is None:
            return

        def others(conn: Connection) -> int:
            replaced = repo.part(conn, upload_id, part_number)
            return repo.upload_parts_size(conn, upload_id) - (replaced.size if replaced else 0)

        total = await self.ctx.db.read(others) + size
        if total > limit:
            raise errors.EntityTooLarge(
                f"The parts of this upload would exceed the bucket's maximum object size of "
                f"{limit} bytes.", fields={"ProposedSize": str(total),
                                          "MaxSizeAllowed": str(limit)})

    def _exceeded(self, bucket_id: int, conn: Connection) -> errors.QuotaExceeded:
        fresh = repo.bucket_by_id(conn, bucket_id)
        if fresh is None:
            return errors.QuotaExceeded(0, 0)
        limits = self.limits(fresh)
        if limits.max_objects is not None and \
                fresh.used_objects + fresh.reserved_objects >= limits.max_objects:
            return errors.QuotaExceeded(
                limits.max_objects, fresh.used_objects,
                f"The bucket holds its maximum of {limits.max_objects} objects.")
        return errors.QuotaExceeded(limits.max_bytes or 0, fresh.used_bytes)

    # -- the write path --------------------------------------------------------------------

    async def reserve(self, bucket: BucketRecord, *, nbytes: int, key: str | None,
                      part: tuple[str, int] | None = None) -> Reservation:
        """Hold ``nbytes`` (less what an overwrite of ``key`` frees) and one object if
        ``key`` is new; for a multipart ``part`` (upload id, number), bytes only, less what
        a part it replaces holds."""
        limits = self.limits(bucket)
        if limits.unlimited:
            return NOTHING_HELD
        if nbytes < HOLD_FROM_BYTES:
            await self._precheck(bucket, limits, nbytes, key, part)
            return NOTHING_HELD
        reservation_id = uuid.uuid4().hex
        now = datetime.now(UTC)

        def unit(conn: Connection) -> Reservation:
            add_bytes, add_objects = nbytes, 0
            if key is not None:
                current = repo.latest_size(conn, bucket.id, key)
                add_objects = 1 if current is None else 0
                add_bytes = max(0, nbytes - (current or 0))
            elif part is not None:
                replaced = repo.part(conn, *part)
                add_bytes = max(0, nbytes - (replaced.size if replaced else 0))
            if not add_bytes and not add_objects:
                return NOTHING_HELD
            if not repo.reserve_quota(conn, bucket_id=bucket.id, add_bytes=add_bytes,
                                      add_objects=add_objects, defaults=self._defaults):
                raise self._exceeded(bucket.id, conn)
            repo.insert_reservation(conn, {
                "id": reservation_id, "bucket_id": bucket.id, "bytes": add_bytes,
                "objects": add_objects, "instance_id": self.instance_id, "created_at": now})
            return Reservation(reservation_id, bucket.id, add_bytes, add_objects)

        return await self.ctx.db.write(unit)

    async def _precheck(self, bucket: BucketRecord, limits: Limits, nbytes: int,
                        key: str | None, part: tuple[str, int] | None) -> None:
        """Small writes are not held (a reservation is a transaction of its own, which would
        cost a small PUT a third of its speed): they are checked against the usage read
        here, and the commit's conditional UPDATE keeps the limit exact."""

        def unit(conn: Connection) -> tuple[int, int]:
            if key is not None:
                current = repo.latest_size(conn, bucket.id, key)
                return max(0, nbytes - (current or 0)), 1 if current is None else 0
            replaced = repo.part(conn, *part) if part is not None else None
            return max(0, nbytes - (replaced.size if replaced else 0)), 0

        add_bytes, add_objects = await self.ctx.db.read(unit)
        if limits.max_bytes is not None and add_bytes and \
                bucket.used_bytes + bucket.reserved_bytes + add_bytes > limits.max_bytes:
            raise errors.QuotaExceeded(limits.max_bytes, bucket.used_bytes)
        if limits.max_objects is not None and add_objects and \
                bucket.used_objects + bucket.reserved_objects + add_objects > \
                limits.max_objects:
            raise errors.QuotaExceeded(
                limits.max_objects, bucket.used_objects,
                f"The bucket holds its maximum of {limits.max_objects} objects.")

    def commit(self, conn: Connection, reservation: Reservation, *, bucket_id: int,
               d_bytes: int, d_objects: int, released_bytes: int = 0) -> None:
        """In the write's own transaction: move usage by the real delta, drop the
        reservation. ``released_bytes``: freed earlier in the same transaction (the parts
        of a completing multipart upload) and so available to this write."""
        held = (0, 0)
        if reservation.id is not None:
            held = repo.take_reservation(conn, reservation.id) or (0, 0)
        allowance = (held[0] + released_bytes, held[1])
        if not repo.apply_usage(conn, bucket_id=bucket_id, d_bytes=d_bytes,
                                d_objects=d_objects, reserved=held, allowance=allowance,
                                defaults=self._defaults):
            raise self._exceeded(bucket_id, conn)

    async def release(self, reservation: Reservation) -> None:
        if reservation.id is None:
            return
        async with shielded():
            try:
                await self._release(reservation)
            except Exception:
                self._unreleased[reservation.id] = reservation
                log.warning("could not release a quota reservation; retrying at the next "
                            "heartbeat", exc_info=True)

    async def _release(self, reservation: Reservation) -> None:
        reservation_id = reservation.id
        assert reservation_id is not None

        def unit(conn: Connection) -> None:
            held = repo.take_reservation(conn, reservation_id)
            if held is not None:
                repo.release_reserved(conn, reservation.bucket_id, *held)

        await self.ctx.db.write(unit)

    # -- instances -------------------------------------------------------------------------

    async def register(self) -> None:
        now = datetime.now(UTC)
        await self.ctx.db.write(lambda conn: repo.register_instance(conn, self.instance_id,
                                                                    now))

    async def heartbeat(self) -> int:
        """Prove this instance alive; release what silent ones held, and what this one
        failed to release before."""
        for reservation_id, reservation in list(self._unreleased.items()):
            await self._release(reservation)
            del self._unreleased[reservation_id]
        now = datetime.now(UTC)
        stale = now - timedelta(seconds=3 * self.ctx.settings.heartbeat_seconds)

        def unit(conn: Connection) -> int:
            repo.heartbeat(conn, self.instance_id, now)
            return repo.release_dead_instances(conn, stale, self.instance_id)

        released = await self.ctx.db.write(unit)
        if released:
            log.info("released %d quota reservation(s) of stopped instances", released)
        return released

    # -- administration --------------------------------------------------------------------

    def _usage(self, bucket: BucketRecord, owner: str) -> BucketUsage:
        overrides = tuple(name for name, column in _LIMIT_COLUMNS.items()
                          if getattr(bucket, column) is not None)
        return BucketUsage(bucket.name, owner, bucket.used_bytes, bucket.used_objects,
                           bucket.reserved_bytes, bucket.reserved_objects,
                           self.limits(bucket), overrides)

    async def list_all(self) -> list[BucketUsage]:
        rows = await self.ctx.db.read(repo.buckets_with_owners)
        return [self._usage(bucket, owner) for bucket, owner in rows]

    async def get(self, bucket_name: str) -> BucketUsage:
        rows = await self.ctx.db.read(
            lambda conn: repo.buckets_with_owners(conn, name=bucket_name))
        if not rows:
            raise errors.NoSuchBucket(fields={"BucketName": bucket_name})
        return self._usage(*rows[0])

    async def set(self, bucket_name: str, *, max_bytes: Any = _UNSET, max_objects: Any = _UNSET,
                  max_object_size: Any = _UNSET) -> BucketUsage:
        """Each limit: an int ≥ 0, ``None`` for unlimited, or ``"default"`` to follow the
        settings again; a limit not passed is left as it is."""
        given = {"max_bytes": max_bytes, "max_objects": max_objects,
                 "max_object_size": max_object_size}
        values: dict[str, int | None] = {}
        for name, value in given.items():
            if value is _UNSET:
                continue
            if value == "default":
                values[_LIMIT_COLUMNS[name]] = None
            elif value is None:
                values[_LIMIT_COLUMNS[name]] = UNLIMITED
            elif isinstance(value, int) and not isinstance(value, bool) and \
                    0 <= value <= MAX_SQL_INT:
                values[_LIMIT_COLUMNS[name]] = value
            else:
                raise errors.InvalidArgument(
                    f"{name} must be an integer from 0 to {MAX_SQL_INT}, null (unlimited) "
                    "or \"default\"", name=name, value=str(value))
        bucket = await self.ctx.db.read(lambda conn: repo.bucket_by_name(conn, bucket_name))
        if bucket is None:
            raise errors.NoSuchBucket(fields={"BucketName": bucket_name})
        if values:
            await self.ctx.db.write(
                lambda conn: repo.set_bucket_limits(conn, bucket.id, values))
        return await self.get(bucket_name)

    async def usage_by_user(self) -> list[dict[str, Any]]:
        totals: dict[str, dict[str, Any]] = {}
        for usage in await self.list_all():
            entry = totals.setdefault(usage.owner, {"user": usage.owner, "buckets": 0,
                                                    "used_bytes": 0, "used_objects": 0})
            entry["buckets"] += 1
            entry["used_bytes"] += usage.used_bytes
            entry["used_objects"] += usage.used_objects
        return sorted(totals.values(), key=lambda e: e["user"])
