"""Bucket lifecycle: the configuration (Put/Get/DeleteBucketLifecycleConfiguration) and the
run that applies it.

A run (:meth:`LifecycleService.run`, at a given ``now``) visits every bucket with rules —
and every bot package, whose ``.gbdrive/temp/`` folder expires by an implicit rule (see
:func:`~gateway.service.lifecycle_rules.package_temp_rule`) — and, for each enabled rule:

- expires current versions (``Expiration`` ``Days``/``Date``): deleted as DeleteObject
  deletes, so a versioned bucket gets a delete marker;
- removes *expired object delete markers*, a key's last version (``ExpiredObjectDeleteMarker``,
  and ``Days`` rules once the marker is old enough);
- removes noncurrent versions (``NoncurrentVersionExpiration``), keeping the
  ``NewerNoncurrentVersions`` newest;
- aborts multipart uploads started ``DaysAfterInitiation`` days ago (their parts' bytes
  leave the bucket's usage).

Candidates are read in key order, a batch at a time, and deleted through the object
service in batches of 100 — the same transaction, usage accounting and change-log entries
as a client's delete. The background loop (``gateway.app``) runs it on one instance at a
time, under the ``lifecycle`` job lease; ``gateway lifecycle run --now …`` runs it once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import and_, exists, func, null, or_, select, update
from sqlalchemy.engine import Connection

from gateway.metadata import repo
from gateway.metadata.models import buckets, multipart_uploads, objects
from gateway.service import changes
from gateway.service.buckets import BucketService
from gateway.service.context import Context
from gateway.service.lifecycle_rules import (
    Filter,
    NoSuchLifecycleConfiguration,
    Rule,
    compile_rules,
    made_before,
    package_temp_rule,
    validate_rules,
)
from gateway.service.listing import successor
from gateway.service.multipart import MultipartService
from gateway.service.objects import ObjectService
from gateway.service.packages import PACKAGE_SUFFIX, TEMP_FOLDER, is_package
from gateway.types import BucketRecord, Principal, UploadRecord

log = logging.getLogger("gateway.lifecycle")

#: Rows read per query, and versions deleted per transaction.
SCAN_BATCH = 500
DELETE_BATCH = 100
_PACKAGE_TEMP_LIKE = f"%.gbdrive/{TEMP_FOLDER}_%"


@dataclass(slots=True)
class LifecycleReport:
    now: datetime
    buckets: int = 0
    #: Current versions expired (removed, or hidden behind a new delete marker).
    expired: int = 0
    #: Delete markers removed because they were a key's only version.
    delete_markers_removed: int = 0
    noncurrent_removed: int = 0
    uploads_aborted: int = 0
    #: Buckets whose run failed (logged; the next run tries again).
    failed_buckets: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_buckets

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["now"] = self.now.isoformat().replace("+00:00", "Z")
        return out


# -- queries ---------------------------------------------------------------------------------


def _key_range(column: Any, flt: Filter) -> list[Any]:
    cond = []
    if flt.prefix:
        cond.append(column >= flt.prefix)
        upper = successor(flt.prefix)
        if upper is not None:
            cond.append(column < upper)
    if flt.package_temp:
        cond.append(column.like(_PACKAGE_TEMP_LIKE))  # narrows; the folder test is in Python
    return cond


def _size_range(column: Any, flt: Filter) -> list[Any]:
    cond = []
    if flt.size_greater_than is not None:
        cond.append(column > flt.size_greater_than)
    if flt.size_less_than is not None:
        cond.append(column < flt.size_less_than)
    return cond


def _current_versions(conn: Connection, bucket_id: int, flt: Filter,
                      made_before: datetime | None, after: str | None) -> list[Any]:
    """Latest versions that are objects (not delete markers), in key order."""
    o = objects.c
    cond = [o.bucket_id == bucket_id, o.is_latest.is_(True), o.is_delete_marker.is_(False),
            *_key_range(o.key, flt), *_size_range(o.size, flt)]
    if made_before is not None:
        cond.append(o.last_modified < made_before)
    if after is not None:
        cond.append(o.key > after)
    return list(conn.execute(select(o.id, o.key, o.size, o.tags, o.last_modified).where(*cond)
                             .order_by(o.key).limit(SCAN_BATCH)).all())


def _lone_delete_markers(conn: Connection, bucket_id: int, flt: Filter,
                         made_before: datetime | None, after: str | None) -> list[Any]:
    """Delete markers that are the latest and only version of their key."""
    o, other = objects.c, objects.alias("other").c
    cond = [o.bucket_id == bucket_id, o.is_latest.is_(True), o.is_delete_marker.is_(True),
            *_key_range(o.key, flt),
            ~exists().where(other.bucket_id == o.bucket_id, other.key == o.key,
                            other.id != o.id)]
    if made_before is not None:
        cond.append(o.last_modified < made_before)
    if after is not None:
        cond.append(o.key > after)
    return list(conn.execute(select(o.key, o.version_id).where(*cond)
                             .order_by(o.key).limit(SCAN_BATCH)).all())


def _noncurrent_versions(conn: Connection, bucket_id: int, flt: Filter, made_before: datetime,
                         keep_newer: int | None, after: tuple[str, int] | None) -> list[Any]:
    """Noncurrent versions (delete markers too) noncurrent since before ``made_before``,
    beyond the ``keep_newer`` newest noncurrent versions of their key; by key, oldest
    first."""
    o, other = objects.c, objects.alias("other").c
    since = func.coalesce(o.noncurrent_since, o.last_modified)
    cond = [o.bucket_id == bucket_id, o.is_latest.is_(False), since < made_before,
            *_key_range(o.key, flt), *_size_range(o.size, flt)]
    if keep_newer is not None:
        newer = (select(func.count()).where(other.bucket_id == o.bucket_id,
                                            other.key == o.key, other.is_latest.is_(False),
                                            other.id > o.id)
                 .scalar_subquery())
        cond.append(newer >= keep_newer)
    if after is not None:
        cond.append(or_(o.key > after[0], and_(o.key == after[0], o.id > after[1])))
    return list(conn.execute(select(o.id, o.key, o.version_id, o.size, o.tags)
                             .where(*cond).order_by(o.key, o.id).limit(SCAN_BATCH)).all())


def _old_uploads(conn: Connection, bucket_id: int, flt: Filter, made_before: datetime,
                 after: tuple[datetime, str] | None) -> list[UploadRecord]:
    u = multipart_uploads.c
    cond = [u.bucket_id == bucket_id, u.initiated_at < made_before, *_key_range(u.key, flt)]
    if after is not None:
        cond.append(or_(u.initiated_at > after[0],
                        and_(u.initiated_at == after[0], u.id > after[1])))
    ids = conn.execute(select(u.id).where(*cond).order_by(u.initiated_at, u.id)
                       .limit(DELETE_BATCH)).scalars().all()
    found = (repo.upload(conn, upload_id) for upload_id in ids)
    return [upload for upload in found if upload is not None]


def _buckets_to_visit(conn: Connection, after: int, limit: int) -> list[int]:
    b = buckets.c
    return list(conn.execute(
        select(b.id).where(or_(b.lifecycle.is_not(None), b.name.like(f"%{PACKAGE_SUFFIX}")),
                           b.id > after)
        .order_by(b.id).limit(limit)).scalars().all())


def _set_lifecycle(conn: Connection, bucket_id: int, rules: list[dict[str, Any]] | None) -> None:
    conn.execute(update(buckets).where(buckets.c.id == bucket_id)
                 .values(lifecycle=rules if rules is not None else null()))


# -- the service -----------------------------------------------------------------------------


class LifecycleService:
    def __init__(self, ctx: Context, buckets: BucketService, objects: ObjectService,
                 multipart: MultipartService) -> None:
        self.ctx = ctx
        self.buckets = buckets
        self.objects = objects
        self.multipart = multipart

    # -- configuration (the bucket's owner, admins and ``full`` grantees, as CORS) ---------

    async def get(self, principal: Principal, bucket_name: str) -> list[dict[str, Any]]:
        """The stored rules; ``NoSuchLifecycleConfiguration`` when there are none."""
        bucket = await self.buckets.owned(principal, bucket_name)
        if not bucket.lifecycle:
            raise NoSuchLifecycleConfiguration(fields={"BucketName": bucket_name})
        return bucket.lifecycle

    async def put(self, principal: Principal, bucket_name: str,
                  rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Replace the configuration with ``rules`` (S3's ``Rules`` shape), once they pass
        S3's checks; the rules as stored."""
        bucket = await self.buckets.owned(principal, bucket_name)
        stored = validate_rules(rules)
        await self.ctx.db.write(lambda conn: _set_lifecycle(conn, bucket.id, stored))
        return stored

    async def delete(self, principal: Principal, bucket_name: str) -> None:
        bucket = await self.buckets.owned(principal, bucket_name)
        await self.ctx.db.write(lambda conn: _set_lifecycle(conn, bucket.id, None))

    def effective_rules(self, bucket: BucketRecord) -> list[Rule]:
        """The rules a run applies to ``bucket``: its enabled rules, and for a bot package
        the implicit ``.gbdrive/temp/`` rule (``GATEWAY_TEMP_EXPIRY``), which is not part
        of the S3 configuration."""
        rules = compile_rules(bucket.lifecycle)
        if is_package(bucket.name):
            rules.append(package_temp_rule(self.ctx.settings.temp_expiry_seconds))
        return rules

    # -- the run ---------------------------------------------------------------------------

    async def run(self, now: datetime | None = None) -> LifecycleReport:
        """Apply every bucket's rules as of ``now`` (default: the clock)."""
        report = LifecycleReport(now=(now or datetime.now(UTC)).astimezone(UTC))
        after = 0
        while True:
            ids = await self.ctx.db.read(partial(_buckets_to_visit, after=after, limit=100))
            for bucket_id in ids:
                bucket = await self.ctx.db.read(partial(repo.bucket_by_id, bucket_id=bucket_id))
                if bucket is None:
                    continue  # deleted meanwhile
                report.buckets += 1
                try:
                    await self.run_bucket(bucket, report)
                except Exception:
                    log.exception("lifecycle run failed on bucket %s; the next run retries",
                                  bucket.name)
                    report.failed_buckets.append(bucket.name)
            if len(ids) < 100:
                break
            after = ids[-1]
        if report.expired or report.delete_markers_removed or report.noncurrent_removed \
                or report.uploads_aborted:
            log.info("lifecycle: %d expired, %d delete markers and %d noncurrent versions "
                     "removed, %d uploads aborted", report.expired,
                     report.delete_markers_removed, report.noncurrent_removed,
                     report.uploads_aborted)
        return report

    async def run_bucket(self, bucket: BucketRecord, report: LifecycleReport) -> None:
        for rule in self.effective_rules(bucket):
            if rule.expires_current:
                report.expired += await self._expire_current(bucket, rule, report.now)
            if rule.removes_delete_markers:
                report.delete_markers_removed += await self._remove_lone_markers(
                    bucket, rule, report.now)
            if rule.noncurrent_days is not None:
                report.noncurrent_removed += await self._remove_noncurrent(
                    bucket, rule, report.now)
            if rule.abort_days is not None:
                report.uploads_aborted += await self._abort_uploads(bucket, rule, report.now)

    async def _delete(self, bucket: BucketRecord, items: Sequence[tuple[str, str | None]],
                      unchanged: Mapping[str, tuple[int, datetime]] | None = None) -> int:
        """Delete as DeleteObject does (delete markers are the bucket owner's)."""
        done = 0
        for start in range(0, len(items), DELETE_BATCH):
            outcomes = await self.objects.delete_batch(
                bucket, items[start:start + DELETE_BATCH], owner_id=bucket.owner_id,
                delete_event=changes.EVENT_EXPIRED, marker_event=changes.EVENT_EXPIRED_MARKER,
                unchanged=unchanged)
            done += sum(1 for outcome in outcomes if outcome.error is None and outcome.changed)
        return done

    async def _expire_current(self, bucket: BucketRecord, rule: Rule, now: datetime) -> int:
        if rule.date is not None:
            if now < rule.date:
                return 0
            before = None  # from that midnight on, every version the rule names
        elif rule.max_age is not None:
            before = now - rule.max_age
        else:
            assert rule.days is not None
            before = made_before(now, rule.days)
            if before is None:
                return 0
        count, after = 0, None
        while True:
            rows = await self.ctx.db.read(partial(
                _current_versions, bucket_id=bucket.id, flt=rule.filter, made_before=before,
                after=after))
            matching = [row for row in rows if rule.filter.matches(row.key, row.tags, row.size)]
            # Only if still as seen: a key written since the scan is not expired.
            count += await self._delete(bucket, [(row.key, None) for row in matching],
                                        {row.key: (row.id, row.last_modified)
                                         for row in matching})
            if len(rows) < SCAN_BATCH:
                return count
            after = rows[-1].key

    async def _remove_lone_markers(self, bucket: BucketRecord, rule: Rule,
                                   now: datetime) -> int:
        if rule.filter.tags:
            return 0  # a delete marker has no tags
        before: datetime | None = None
        if rule.days is not None:
            before = made_before(now, rule.days)
            if before is None:
                return 0
        elif rule.max_age is not None:
            before = now - rule.max_age
        count, after = 0, None
        while True:
            rows = await self.ctx.db.read(partial(
                _lone_delete_markers, bucket_id=bucket.id, flt=rule.filter,
                made_before=before, after=after))
            # Named by version id: if the key was written meanwhile, only the marker goes.
            doomed: list[tuple[str, str | None]] = [
                (row.key, row.version_id) for row in rows
                if rule.filter.matches(row.key, None, 0)]
            count += await self._delete(bucket, doomed)
            if len(rows) < SCAN_BATCH:
                return count
            after = rows[-1].key

    async def _remove_noncurrent(self, bucket: BucketRecord, rule: Rule, now: datetime) -> int:
        assert rule.noncurrent_days is not None
        before = made_before(now, rule.noncurrent_days)
        if before is None:
            return 0
        count, after = 0, None
        while True:
            rows = await self.ctx.db.read(partial(
                _noncurrent_versions, bucket_id=bucket.id, flt=rule.filter,
                made_before=before, keep_newer=rule.newer_noncurrent, after=after))
            doomed: list[tuple[str, str | None]] = [
                (row.key, row.version_id) for row in rows
                if rule.filter.matches(row.key, row.tags, row.size)]
            count += await self._delete(bucket, doomed)
            if len(rows) < SCAN_BATCH:
                return count
            after = (rows[-1].key, rows[-1].id)

    async def _abort_uploads(self, bucket: BucketRecord, rule: Rule, now: datetime) -> int:
        assert rule.abort_days is not None
        before = made_before(now, rule.abort_days)
        if before is None:
            return 0
        count, after = 0, None
        while True:
            uploads = await self.ctx.db.read(partial(
                _old_uploads, bucket_id=bucket.id, flt=rule.filter, made_before=before,
                after=after))
            for upload in uploads:
                # Sizes do not apply (an upload has none yet); tags cannot be in the rule.
                if rule.filter.matches_key(upload.key):
                    count += await self.multipart.abort_upload(upload)
            if len(uploads) < DELETE_BATCH:
                return count
            after = (uploads[-1].initiated_at, uploads[-1].id)
