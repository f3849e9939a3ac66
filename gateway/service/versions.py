"""The row bookkeeping of S3 versioning: where a new version goes, and what removing one
leaves. Runs inside the caller's write transaction, after ``repo.lock_bucket`` (which
answers the bucket's versioning state as of that lock, so a concurrent
PutBucketVersioning is never half-seen).

A bucket is in one of three states:

- never versioned (``None``): one row per key, version ``null``, overwritten in place; a
  delete removes the row;
- ``Enabled``: each write adds a row with a fresh version id and the previous latest
  becomes noncurrent; a delete without a version id adds a delete marker;
- ``Suspended``: writes and deletes make the ``null`` version (an object or a delete
  marker), replacing any earlier ``null`` version wherever it sits in the history; the
  other versions stay.

A key's latest version is always its row with the highest id: rows are inserted under the
bucket's lock, and only the latest row is ever replaced in place. Removing the latest
version by id promotes the next one. Usage counts every version that holds bytes (delete
markers hold none).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from gateway import errors
from gateway.metadata import repo
from gateway.metadata.models import NULL_VERSION, objects
from gateway.types import ObjectRecord

ENABLED = "Enabled"
SUSPENDED = "Suspended"
STATES = (ENABLED, SUSPENDED)

# Version ids this gateway hands out are 32 hex digits; S3's are opaque URL-safe strings
# of about that length. Anything else can name no version.
_VERSION_ID = re.compile(r"[A-Za-z0-9._-]{1,1024}")


class Conflict(Exception):
    """Another writer changed the key's rows first (PostgreSQL): run the unit again."""


def new_version_id() -> str:
    return uuid.uuid4().hex


def check_version_id(version_id: str | None) -> None:
    """``InvalidArgument`` for a version id that cannot exist (S3 answers the same)."""
    if version_id is not None and (version_id == "" or not _VERSION_ID.fullmatch(version_id)):
        raise errors.InvalidArgument("Invalid version id specified", name="versionId",
                                     value=version_id)


def _usage(record: ObjectRecord | None) -> tuple[int, int]:
    if record is None or record.is_delete_marker:
        return 0, 0
    return record.size, 1


@dataclass(slots=True)
class Placed:
    """A version written: its row, its id, the blobs of the rows it replaced, and how the
    bucket's usage moves."""

    object_id: int
    version_id: str
    freed_blobs: list[str] = field(default_factory=list)
    d_bytes: int = 0
    d_objects: int = 0
    #: The row replaced in place (its parts must be replaced too), if any.
    replaced: ObjectRecord | None = None


def _demote(conn: Connection, current: ObjectRecord, now: datetime) -> None:
    result = conn.execute(
        update(objects).where(objects.c.id == current.id, objects.c.is_latest.is_(True))
        .values(is_latest=False, noncurrent_since=now))
    if result.rowcount != 1:
        raise Conflict


def _replace(conn: Connection, old: ObjectRecord, values: dict[str, Any]) -> None:
    if not repo.replace_object(conn, old.id, old.blob_key, values):
        raise Conflict


def _remove_row(conn: Connection, row: ObjectRecord) -> None:
    if not repo.delete_object_row(conn, row.id, row.blob_key):
        raise Conflict


def place(conn: Connection, *, bucket_id: int, key: str, state: str | None,
          values: dict[str, Any], current: ObjectRecord | None, now: datetime) -> Placed:
    """Write the version ``values`` describe (an object, or a delete marker with
    ``is_delete_marker``) as ``key``'s latest. ``current``: the latest row, read in this
    transaction. ``values`` holds the row's columns but ``bucket_id``, ``key``,
    ``version_id``, ``is_latest`` and ``noncurrent_since``."""
    values = {**values, "is_latest": True, "noncurrent_since": None}
    add_bytes = 0 if values.get("is_delete_marker") else int(values["size"])
    add_objects = 0 if values.get("is_delete_marker") else 1
    new_row = {**values, "bucket_id": bucket_id, "key": key}

    if state == ENABLED:
        if current is not None:
            _demote(conn, current, now)
        version_id = new_version_id()
        object_id = repo.insert_object(conn, {**new_row, "version_id": version_id})
        return Placed(object_id, version_id, d_bytes=add_bytes, d_objects=add_objects)

    # Never versioned, or suspended: this write is the null version.
    null = current if current is not None and current.version_id == NULL_VERSION else (
        repo.object_version(conn, bucket_id, key, NULL_VERSION) if state == SUSPENDED
        else None)
    if null is not None and null is current:
        _replace(conn, current, {**values, "version_id": NULL_VERSION})
        old_bytes, old_objects = _usage(current)
        return Placed(current.id, NULL_VERSION,
                      [current.blob_key] if current.blob_key else [],
                      add_bytes - old_bytes, add_objects - old_objects, replaced=current)
    freed: list[str] = []
    d_bytes, d_objects = add_bytes, add_objects
    if null is not None:  # an older null version, further down the history
        _remove_row(conn, null)
        if null.blob_key:
            freed.append(null.blob_key)
        old_bytes, old_objects = _usage(null)
        d_bytes, d_objects = d_bytes - old_bytes, d_objects - old_objects
    if current is not None:
        _demote(conn, current, now)
    object_id = repo.insert_object(conn, {**new_row, "version_id": NULL_VERSION})
    return Placed(object_id, NULL_VERSION, freed, d_bytes, d_objects)


def delete_marker_values(now: datetime, owner_id: int | None) -> dict[str, Any]:
    return {"size": 0, "etag": "", "last_modified": now, "blob_key": None,
            "content_type": None, "user_metadata": {}, "headers": {},
            "checksum_algorithm": None, "checksum_value": None, "storage_class": "STANDARD",
            "owner_id": owner_id, "is_delete_marker": True, "parts_count": None,
            "acl": "private", "tags": None, "encryption": None}


@dataclass(slots=True)
class Removed:
    """What a DeleteObject did: the version it names (a removed version, or the delete
    marker it made), whether that is a delete marker, and what changed."""

    version_id: str | None
    delete_marker: bool = False
    freed_blobs: list[str] = field(default_factory=list)
    d_bytes: int = 0
    d_objects: int = 0
    #: The event for the change log, or None when nothing visible changed.
    event: str | None = None


def remove(conn: Connection, *, bucket_id: int, key: str, version_id: str | None,
           state: str | None, now: datetime, owner_id: int | None,
           delete_event: str, marker_event: str) -> Removed:
    """DeleteObject on ``key``: without ``version_id``, the object goes (never versioned)
    or a delete marker takes its place; with one, that version (or marker) is removed for
    good, and if it was the latest the next newest becomes the latest."""
    if version_id is None:
        current = repo.latest_object(conn, bucket_id, key)
        if state is None:
            if current is None:
                return Removed(None)
            _remove_row(conn, current)
            old_bytes, old_objects = _usage(current)
            return Removed(None, False, [current.blob_key] if current.blob_key else [],
                           -old_bytes, -old_objects,
                           delete_event if not current.is_delete_marker else None)
        placed = place(conn, bucket_id=bucket_id, key=key, state=state,
                       values=delete_marker_values(now, owner_id), current=current, now=now)
        return Removed(placed.version_id, True, placed.freed_blobs, placed.d_bytes,
                       placed.d_objects, marker_event)

    row = repo.object_version(conn, bucket_id, key, version_id)
    if row is None:
        return Removed(version_id)  # S3 answers 204 for a version that is not there
    _remove_row(conn, row)
    if row.is_latest:
        _promote_newest(conn, bucket_id, key)
    old_bytes, old_objects = _usage(row)
    return Removed(row.version_id, row.is_delete_marker,
                   [row.blob_key] if row.blob_key else [], -old_bytes, -old_objects,
                   delete_event)


def _promote_newest(conn: Connection, bucket_id: int, key: str) -> None:
    newest = conn.execute(select(func.max(objects.c.id)).where(
        objects.c.bucket_id == bucket_id, objects.c.key == key)).scalar()
    if newest is not None:
        conn.execute(update(objects).where(objects.c.id == newest)
                     .values(is_latest=True, noncurrent_since=None))
