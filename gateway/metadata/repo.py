"""Every SQL statement the service runs, in portable SQLAlchemy Core.

Synchronous functions over a Connection, composed into units of work that
``Database.read`` / ``Database.write`` run (see ``db``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Row

from gateway.metadata.models import (
    access_keys,
    api_tokens,
    bucket_grants,
    buckets,
    group_members,
    groups,
    instances,
    job_leases,
    multipart_parts,
    multipart_uploads,
    object_parts,
    objects,
    quota_reservations,
    sessions,
    users,
)
from gateway.types import (
    BucketRecord,
    ListedObject,
    ObjectPart,
    ObjectRecord,
    PartRecord,
    Principal,
    StoredObject,
    UploadRecord,
)

# -- identities ----------------------------------------------------------------------------


# Hot statements are built once, with bind parameters: building a statement costs more
# than running it on SQLite.
_PRINCIPAL_FOR_KEY = (
    select(users.c.id, users.c.name, users.c.role, access_keys.c.secret)
    .select_from(access_keys.join(users, users.c.id == access_keys.c.user_id))
    .where(access_keys.c.access_key == bindparam("access_key"),
           access_keys.c.enabled.is_(True), users.c.disabled.is_(False))
)


def user_by_name(conn: Connection, name: str) -> Row[Any] | None:
    return (conn.execute(select(users).where(users.c.name == name))).first()


def user_owner(conn: Connection, user_id: int) -> Any:
    return conn.execute(select(users.c.name, users.c.display_name, users.c.canonical_id)
                        .where(users.c.id == user_id)).first()


def count_users(conn: Connection) -> int:
    return int((conn.execute(select(func.count()).select_from(users))).scalar_one())


def insert_user(conn: Connection, name: str, role: str, now: datetime, *,
                display_name: str | None = None, email: str | None = None,
                canonical_id: str | None = None) -> int:
    result = conn.execute(insert(users).values(
        name=name, role=role, created_at=now, display_name=display_name, email=email,
        canonical_id=canonical_id, disabled=False).returning(users.c.id))
    return int(result.scalar_one())


def list_users(conn: Connection) -> list[Any]:
    return list(conn.execute(select(users).order_by(users.c.name)).all())


def set_user_disabled(conn: Connection, name: str, disabled: bool) -> bool:
    result = conn.execute(update(users).where(users.c.name == name)
                          .values(disabled=disabled))
    return result.rowcount == 1


def list_access_keys(conn: Connection, user_id: int | None = None) -> list[Any]:
    stmt = (select(access_keys.c.access_key, access_keys.c.enabled,
                   access_keys.c.created_at, users.c.name.label("user"))
            .select_from(access_keys.join(users, users.c.id == access_keys.c.user_id))
            .order_by(users.c.name, access_keys.c.created_at))
    if user_id is not None:
        stmt = stmt.where(access_keys.c.user_id == user_id)
    return list(conn.execute(stmt).all())


def set_access_key_enabled(conn: Connection, access_key: str, enabled: bool) -> bool:
    result = conn.execute(update(access_keys).where(access_keys.c.access_key == access_key)
                          .values(enabled=enabled))
    return result.rowcount == 1


def unsealed_secrets(conn: Connection, prefix: str) -> list[tuple[str, str]]:
    rows = conn.execute(select(access_keys.c.access_key, access_keys.c.secret)
                        .where(~access_keys.c.secret.startswith(prefix))).all()
    return [(r.access_key, r.secret) for r in rows]


def set_secret(conn: Connection, access_key: str, secret: str) -> None:
    conn.execute(update(access_keys).where(access_keys.c.access_key == access_key)
                 .values(secret=secret))


def access_key_row(conn: Connection, access_key: str) -> Row[Any] | None:
    return (conn.execute(
        select(access_keys).where(access_keys.c.access_key == access_key))).first()


def insert_access_key(conn: Connection, access_key: str, user_id: int,
                            secret: str, now: datetime) -> None:
    conn.execute(insert(access_keys).values(
        access_key=access_key, user_id=user_id, secret=secret, enabled=True, created_at=now))


def update_access_key(conn: Connection, access_key: str, *, secret: str,
                            user_id: int) -> None:
    conn.execute(update(access_keys).where(access_keys.c.access_key == access_key)
                       .values(secret=secret, user_id=user_id, enabled=True))


# -- buckets -------------------------------------------------------------------------------


def _bucket(row: Row[Any]) -> BucketRecord:
    return BucketRecord(row.id, row.name, row.owner_id, row.region, row.created_at,
                        row.acl, row.cors, row.quota_bytes, row.quota_objects,
                        row.max_object_size, row.used_bytes, row.used_objects,
                        row.reserved_bytes, row.reserved_objects, row.versioning,
                        row.tags, row.lifecycle, row.encryption)


_BUCKET_BY_NAME = select(buckets).where(buckets.c.name == bindparam("name"))


def bucket_by_id(conn: Connection, bucket_id: int) -> BucketRecord | None:
    row = conn.execute(select(buckets).where(buckets.c.id == bucket_id)).first()
    return _bucket(row) if row else None


def bucket_by_name(conn: Connection, name: str) -> BucketRecord | None:
    row = conn.execute(_BUCKET_BY_NAME, {"name": name}).first()
    return _bucket(row) if row else None


def list_buckets(conn: Connection, owner_id: int | None) -> list[BucketRecord]:
    stmt = select(buckets).order_by(buckets.c.name)
    if owner_id is not None:
        stmt = stmt.where(buckets.c.owner_id == owner_id)
    return [_bucket(r) for r in (conn.execute(stmt)).all()]


def insert_bucket(conn: Connection, name: str, owner_id: int, region: str,
                  now: datetime, acl: str = "private") -> BucketRecord:
    result = conn.execute(insert(buckets).values(
        name=name, owner_id=owner_id, region=region, created_at=now, acl=acl)
        .returning(buckets.c.id))
    return BucketRecord(int(result.scalar_one()), name, owner_id, region, now, acl)


def set_bucket_acl(conn: Connection, bucket_id: int, acl: str) -> None:
    conn.execute(update(buckets).where(buckets.c.id == bucket_id).values(acl=acl))


def set_bucket_cors(conn: Connection, bucket_id: int, rules: list[dict[str, Any]] | None
                    ) -> None:
    conn.execute(update(buckets).where(buckets.c.id == bucket_id).values(cors=rules))


def set_object_acl(conn: Connection, object_id: int, acl: str) -> bool:
    result = conn.execute(update(objects).where(objects.c.id == object_id).values(acl=acl))
    return result.rowcount == 1


def set_object_tags(conn: Connection, object_id: int, tags: dict[str, str] | None, *,
                    latest_only: bool) -> bool:
    """Compare-and-set an object version's tags: False when the row is gone, became a
    delete marker, or (``latest_only``) is no longer the latest version."""
    stmt = update(objects).where(objects.c.id == object_id,
                                 objects.c.is_delete_marker.is_(False))
    if latest_only:
        stmt = stmt.where(objects.c.is_latest.is_(True))
    return conn.execute(stmt.values(tags=tags)).rowcount == 1


def set_bucket_encryption(conn: Connection, bucket_id: int,
                          config: dict[str, Any] | None) -> bool:
    """A bucket's default encryption (NULL: none); False when the bucket is gone."""
    result = conn.execute(update(buckets).where(buckets.c.id == bucket_id)
                          .values(encryption=config))
    return result.rowcount == 1


def set_bucket_tags(conn: Connection, bucket_id: int, tags: dict[str, str] | None) -> bool:
    result = conn.execute(update(buckets).where(buckets.c.id == bucket_id).values(tags=tags))
    return result.rowcount == 1


def bucket_has_objects(conn: Connection, bucket_id: int) -> bool:
    stmt = select(exists().where(objects.c.bucket_id == bucket_id))
    return bool((conn.execute(stmt)).scalar())


def delete_bucket(conn: Connection, bucket_id: int) -> None:
    conn.execute(delete(buckets).where(buckets.c.id == bucket_id))


# -- objects -------------------------------------------------------------------------------

_OBJECT_COLUMNS = (
    objects.c.id, objects.c.bucket_id, objects.c.key, objects.c.version_id, objects.c.size,
    objects.c.etag, objects.c.last_modified, objects.c.blob_key, objects.c.content_type,
    objects.c.user_metadata, objects.c.headers, objects.c.checksum_algorithm,
    objects.c.checksum_value, objects.c.storage_class, objects.c.is_delete_marker,
    objects.c.parts_count, objects.c.acl, objects.c.is_latest, objects.c.tags,
    objects.c.encryption,
)


def _object(row: Any) -> ObjectRecord:
    return ObjectRecord(
        id=row.id, bucket_id=row.bucket_id, key=row.key, version_id=row.version_id,
        size=row.size, etag=row.etag, last_modified=row.last_modified, blob_key=row.blob_key,
        content_type=row.content_type, user_metadata=dict(row.user_metadata or {}),
        headers=dict(row.headers or {}), checksum_algorithm=row.checksum_algorithm,
        checksum_value=row.checksum_value, storage_class=row.storage_class,
        is_delete_marker=row.is_delete_marker, parts_count=row.parts_count, acl=row.acl,
        is_latest=row.is_latest, tags=dict(row.tags) if row.tags is not None else None,
        encryption=row.encryption,
    )


_LATEST_OBJECT = select(*_OBJECT_COLUMNS).where(
    objects.c.bucket_id == bindparam("bucket_id"), objects.c.key == bindparam("key"),
    objects.c.is_latest.is_(True))

def _bucket_and_object(which: Any) -> Any:
    return (
        select(buckets.c.id.label("b_id"), buckets.c.name.label("b_name"),
               buckets.c.owner_id.label("b_owner"), buckets.c.region.label("b_region"),
               buckets.c.created_at.label("b_created"), buckets.c.acl.label("b_acl"),
               buckets.c.cors.label("b_cors"), buckets.c.versioning.label("b_versioning"),
               *_OBJECT_COLUMNS)
        .select_from(buckets.outerjoin(objects, and_(
            objects.c.bucket_id == buckets.c.id, objects.c.key == bindparam("key"), which)))
        .where(buckets.c.name == bindparam("bucket"))
    )


_BUCKET_AND_LATEST = _bucket_and_object(objects.c.is_latest.is_(True))
_BUCKET_AND_VERSION = _bucket_and_object(objects.c.version_id == bindparam("version_id"))


def latest_object(conn: Connection, bucket_id: int, key: str) -> ObjectRecord | None:
    row = conn.execute(_LATEST_OBJECT, {"bucket_id": bucket_id, "key": key}).first()
    return _object(row) if row else None


_OBJECT_VERSION = select(*_OBJECT_COLUMNS).where(
    objects.c.bucket_id == bindparam("bucket_id"), objects.c.key == bindparam("key"),
    objects.c.version_id == bindparam("version_id"))


def object_version(conn: Connection, bucket_id: int, key: str,
                   version_id: str | None) -> ObjectRecord | None:
    """The row of one version of ``key`` (a delete marker included); the latest when
    ``version_id`` is None."""
    if version_id is None:
        return latest_object(conn, bucket_id, key)
    row = conn.execute(_OBJECT_VERSION, {"bucket_id": bucket_id, "key": key,
                                         "version_id": version_id}).first()
    return _object(row) if row else None


def bucket_and_latest_object(
    conn: Connection, bucket_name: str, key: str, version_id: str | None = None
) -> tuple[BucketRecord | None, ObjectRecord | None]:
    """One round trip for the hot read path: the bucket and its latest object row (or the
    row of ``version_id``)."""
    if version_id is None:
        row = conn.execute(_BUCKET_AND_LATEST, {"bucket": bucket_name, "key": key}).first()
    else:
        row = conn.execute(_BUCKET_AND_VERSION, {"bucket": bucket_name, "key": key,
                                                 "version_id": version_id}).first()
    if row is None:
        return None, None
    bucket = BucketRecord(row.b_id, row.b_name, row.b_owner, row.b_region, row.b_created,
                          row.b_acl, row.b_cors, versioning=row.b_versioning)
    return bucket, (_object(row) if row.id is not None else None)


_INSERT_OBJECT = insert(objects).returning(objects.c.id)
# Column values come as execution parameters (compiled once per set of columns); the
# compare-and-swap conditions use names that cannot clash with columns.
_REPLACE_OBJECT = update(objects).where(
    objects.c.id == bindparam("cas_id"),
    objects.c.blob_key.is_not_distinct_from(bindparam("cas_blob_key")))
_DELETE_OBJECT = delete(objects).where(
    objects.c.id == bindparam("cas_id"),
    objects.c.blob_key.is_not_distinct_from(bindparam("cas_blob_key")))


def insert_object(conn: Connection, values: dict[str, Any]) -> int:
    return int(conn.execute(_INSERT_OBJECT, values).scalar_one())


def replace_object(conn: Connection, object_id: int, expected_blob_key: str | None,
                   values: dict[str, Any]) -> bool:
    """Compare-and-swap on the blob key: False if another writer got there first."""
    result = conn.execute(_REPLACE_OBJECT, {**values, "cas_id": object_id,
                                            "cas_blob_key": expected_blob_key})
    return result.rowcount == 1


def delete_object_row(conn: Connection, object_id: int, expected_blob_key: str | None) -> bool:
    result = conn.execute(_DELETE_OBJECT, {"cas_id": object_id,
                                           "cas_blob_key": expected_blob_key})
    return result.rowcount == 1


def _latest_page(conn: Connection, columns: Sequence[Any], bucket_id: int, after: str | None,
                 after_inclusive: bool, prefix: str, upper: str | None, limit: int) -> Any:
    """``columns`` of the latest, non-deleted rows in key (byte) order, bounded below and
    above."""
    cond = [objects.c.bucket_id == bucket_id, objects.c.is_latest.is_(True),
            objects.c.is_delete_marker.is_(False)]
    if after is not None:
        cond.append(objects.c.key >= after if after_inclusive else objects.c.key > after)
    if prefix:
        cond.append(objects.c.key >= prefix)
    if upper is not None:
        cond.append(objects.c.key < upper)
    return conn.execute(select(*columns).where(*cond).order_by(objects.c.key).limit(limit))


def list_latest(
    conn: Connection, bucket_id: int, *, after: str | None, after_inclusive: bool,
    prefix: str, upper: str | None, limit: int,
) -> Sequence[ObjectRecord]:
    """Latest, non-deleted object rows in key (byte) order, bounded below and above."""
    return [_object(r) for r in _latest_page(conn, _OBJECT_COLUMNS, bucket_id, after,
                                             after_inclusive, prefix, upper, limit)]


_LISTED_COLUMNS = (objects.c.key, objects.c.size, objects.c.etag, objects.c.last_modified,
                   objects.c.storage_class, objects.c.checksum_algorithm)


def list_latest_entries(
    conn: Connection, bucket_id: int, *, after: str | None, after_inclusive: bool,
    prefix: str, upper: str | None, limit: int,
) -> Sequence[ListedObject]:
    """As :func:`list_latest`, with only what a listing shows (ListObjects' hot path)."""
    return [ListedObject(*r) for r in _latest_page(conn, _LISTED_COLUMNS, bucket_id, after,
                                                   after_inclusive, prefix, upper, limit)]


def list_versions(
    conn: Connection, bucket_id: int, *, after_key: str | None, after_inclusive: bool,
    below_id: int | None, prefix: str, upper: str | None, limit: int,
) -> Sequence[ObjectRecord]:
    """Every version and delete marker, by key (byte order), then newest first. Resumes
    after ``after_key`` (or at it, ``after_inclusive``); with ``below_id``, first the
    versions of ``after_key`` older than that row."""
    cond = [objects.c.bucket_id == bucket_id]
    if after_key is not None:
        later = objects.c.key >= after_key if after_inclusive else objects.c.key > after_key
        if below_id is not None:
            later = or_(later, and_(objects.c.key == after_key, objects.c.id < below_id))
        cond.append(later)
    if prefix:
        cond.append(objects.c.key >= prefix)
    if upper is not None:
        cond.append(objects.c.key < upper)
    stmt = (select(*_OBJECT_COLUMNS).where(*cond)
            .order_by(objects.c.key, objects.c.id.desc()).limit(limit))
    return [_object(r) for r in conn.execute(stmt).all()]


def blob_is_referenced(conn: Connection, *, blob_key: str) -> bool:
    """An object points to the blob, or a multipart upload will (or is completing into it)."""
    stmt = select(exists().where(objects.c.blob_key == blob_key)
                  | exists().where(multipart_uploads.c.blob_key == blob_key))
    return bool(conn.execute(stmt).scalar())


# -- object parts --------------------------------------------------------------------------

_DELETE_OBJECT_PARTS = delete(object_parts).where(object_parts.c.object_id == bindparam("oid"))


def replace_object_parts(conn: Connection, object_id: int, parts: Sequence[ObjectPart]) -> None:
    conn.execute(_DELETE_OBJECT_PARTS, {"oid": object_id})
    if parts:
        conn.execute(insert(object_parts), [
            {"object_id": object_id, "part_number": p.part_number, "offset": p.offset,
             "size": p.size, "etag": p.etag, "checksum_value": p.checksum_value}
            for p in parts])


def object_part(conn: Connection, object_id: int, part_number: int) -> ObjectPart | None:
    row = conn.execute(select(object_parts).where(
        object_parts.c.object_id == object_id,
        object_parts.c.part_number == part_number)).first()
    if row is None:
        return None
    return ObjectPart(row.part_number, row.offset, row.size, row.etag, row.checksum_value)


def object_layout(conn: Connection, object_id: int) -> list[ObjectPart]:
    """The part layout of a completed multipart object, in part order."""
    rows = conn.execute(select(object_parts).where(object_parts.c.object_id == object_id)
                        .order_by(object_parts.c.part_number))
    return [ObjectPart(r.part_number, r.offset, r.size, r.etag, r.checksum_value)
            for r in rows]


# -- multipart uploads ---------------------------------------------------------------------


def _upload(row: Any) -> UploadRecord:
    return UploadRecord(
        id=row.id, bucket_id=row.bucket_id, key=row.key, blob_key=row.blob_key,
        backend_upload_id=row.backend_upload_id, owner_id=row.owner_id,
        initiated_at=row.initiated_at, state=row.state, content_type=row.content_type,
        user_metadata=dict(row.user_metadata or {}), headers=dict(row.headers or {}),
        storage_class=row.storage_class, checksum_algorithm=row.checksum_algorithm,
        checksum_type=row.checksum_type, acl=row.acl,
        tags=dict(row.tags) if row.tags is not None else None, encryption=row.encryption)


def _part(row: Any) -> PartRecord:
    return PartRecord(row.part_number, row.size, row.etag, row.checksum_value, row.token,
                      row.last_modified)


def insert_upload(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(multipart_uploads), values)


_UPLOAD = select(multipart_uploads).where(multipart_uploads.c.id == bindparam("upload_id"))


def upload(conn: Connection, upload_id: str) -> UploadRecord | None:
    row = conn.execute(_UPLOAD, {"upload_id": upload_id}).first()
    return _upload(row) if row else None


def set_upload_state(conn: Connection, upload_id: str, state: str) -> bool:
    result = conn.execute(update(multipart_uploads)
                          .where(multipart_uploads.c.id == upload_id).values(state=state))
    return result.rowcount == 1


def delete_upload(conn: Connection, upload_id: str) -> int | None:
    """Remove an upload and its parts, and the parts' bytes from the bucket's usage;
    the bytes freed, or None when there was no such upload."""
    bucket_id = conn.execute(select(multipart_uploads.c.bucket_id)
                             .where(multipart_uploads.c.id == upload_id)).scalar()
    if bucket_id is None:
        return None
    freed = upload_parts_size(conn, upload_id)
    conn.execute(delete(multipart_parts).where(multipart_parts.c.upload_id == upload_id))
    result = conn.execute(delete(multipart_uploads).where(multipart_uploads.c.id == upload_id))
    if result.rowcount != 1:
        return None
    if freed:
        adjust_usage(conn, int(bucket_id), -freed, 0)
    return freed


def part(conn: Connection, upload_id: str, part_number: int) -> PartRecord | None:
    row = conn.execute(select(multipart_parts).where(
        multipart_parts.c.upload_id == upload_id,
        multipart_parts.c.part_number == part_number)).first()
    return _part(row) if row else None


def put_part_row(conn: Connection, upload_id: str, record: PartRecord) -> PartRecord | None:
    """Record a part; returns the attempt it supersedes, if any."""
    values = {"size": record.size, "etag": record.etag, "checksum_value": record.checksum_value,
              "token": record.token, "last_modified": record.last_modified}
    old = part(conn, upload_id, record.part_number)
    if old is None:
        conn.execute(insert(multipart_parts).values(
            upload_id=upload_id, part_number=record.part_number, **values))
        return None
    conn.execute(update(multipart_parts).where(
        multipart_parts.c.upload_id == upload_id,
        multipart_parts.c.part_number == record.part_number).values(**values))
    return old


def parts(conn: Connection, upload_id: str, *, after: int = 0,
          limit: int | None = None) -> list[PartRecord]:
    stmt = (select(multipart_parts)
            .where(multipart_parts.c.upload_id == upload_id,
                   multipart_parts.c.part_number > after)
            .order_by(multipart_parts.c.part_number))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [_part(r) for r in conn.execute(stmt).all()]


def list_uploads(conn: Connection, *, bucket_id: int, prefix: str, upper: str | None,
                 key_marker: str | None, upload_id_marker: str | None,
                 limit: int, key_from: str | None = None) -> list[UploadRecord]:
    """Uploads in (key, initiation time, id) order, after the markers (``key_from``: an
    inclusive lower bound on the key)."""
    u = multipart_uploads.c
    cond = [u.bucket_id == bucket_id]
    if key_from is not None:
        cond.append(u.key >= key_from)
    if prefix:
        cond.append(u.key >= prefix)
    if upper is not None:
        cond.append(u.key < upper)
    stmt = select(multipart_uploads).where(*cond).order_by(u.key, u.initiated_at, u.id)
    if key_marker is not None:
        if upload_id_marker:
            marker = conn.execute(select(u.initiated_at).where(
                u.id == upload_id_marker, u.key == key_marker)).scalar()
            if marker is not None:
                stmt = stmt.where(
                    (u.key > key_marker)
                    | and_(u.key == key_marker, (u.initiated_at > marker)
                           | and_(u.initiated_at == marker, u.id > upload_id_marker)))
            else:
                stmt = stmt.where(u.key > key_marker)
        else:
            stmt = stmt.where(u.key > key_marker)
    return [_upload(r) for r in conn.execute(stmt.limit(limit)).all()]


def uploads_initiated_before(conn: Connection, cutoff: datetime,
                             limit: int) -> list[UploadRecord]:
    stmt = (select(multipart_uploads).where(multipart_uploads.c.initiated_at < cutoff)
            .order_by(multipart_uploads.c.initiated_at).limit(limit))
    return [_upload(r) for r in conn.execute(stmt).all()]


def upload_count(conn: Connection, bucket_id: int) -> int:
    stmt = select(func.count()).select_from(multipart_uploads).where(
        multipart_uploads.c.bucket_id == bucket_id)
    return int(conn.execute(stmt).scalar_one())


def all_uploads_count(conn: Connection) -> int:
    """Multipart uploads in progress, in every bucket."""
    return int(conn.execute(select(func.count()).select_from(multipart_uploads)).scalar_one())


# -- maintenance: migrate, fsck ------------------------------------------------------------

_STORED_OBJECTS = (
    select(objects.c.id, buckets.c.name.label("bucket"), objects.c.key, objects.c.version_id,
           objects.c.size, objects.c.etag, objects.c.blob_key, objects.c.parts_count,
           objects.c.encryption)
    .select_from(objects.join(buckets, buckets.c.id == objects.c.bucket_id))
    .where(objects.c.id > bindparam("after_id"), objects.c.blob_key.is_not(None))
    .order_by(objects.c.id).limit(bindparam("limit"))
)


def stored_objects_after(conn: Connection, after_id: int, limit: int, *,
                         with_parts: bool = True) -> list[StoredObject]:
    """Object rows that hold a blob, in id order after ``after_id`` (keyset pagination),
    with their part layouts. Two statements: run it with ``Database.scan``."""
    rows = conn.execute(_STORED_OBJECTS, {"after_id": after_id, "limit": limit}).all()
    layouts: dict[int, list[ObjectPart]] = {}
    # An encrypted multipart blob's size follows from its layout: loaded for those always.
    multipart_ids = [r.id for r in rows if r.parts_count and (with_parts or r.encryption)]
    if multipart_ids:
        for p in conn.execute(select(object_parts)
                              .where(object_parts.c.object_id.in_(multipart_ids))
                              .order_by(object_parts.c.object_id, object_parts.c.part_number)):
            layouts.setdefault(int(p.object_id), []).append(
                ObjectPart(p.part_number, p.offset, p.size, p.etag, p.checksum_value))
    return [StoredObject(int(r.id), r.bucket, r.key, r.version_id, int(r.size), r.etag,
                         r.blob_key, tuple(layouts.get(int(r.id), ())), r.encryption or None)
            for r in rows]


def stored_objects_count(conn: Connection) -> int:
    """Object rows that hold a blob."""
    return int(conn.execute(select(func.count()).select_from(objects)
                            .where(objects.c.blob_key.is_not(None))).scalar_one())


def object_holds_blob(conn: Connection, blob_key: str) -> bool:
    """An object row (not an upload) points to the blob."""
    return bool(conn.execute(select(exists().where(objects.c.blob_key == blob_key))).scalar())


def referenced_blob_keys(conn: Connection, blob_keys: Sequence[str]) -> set[str]:
    """Which of ``blob_keys`` an object or a multipart upload points to (as
    ``blob_is_referenced``, for many at once)."""
    if not blob_keys:
        return set()
    keys = list(blob_keys)
    found = set(conn.execute(select(objects.c.blob_key)
                             .where(objects.c.blob_key.in_(keys))).scalars())
    found.update(conn.execute(select(multipart_uploads.c.blob_key)
                              .where(multipart_uploads.c.blob_key.in_(keys))).scalars())
    return {str(k) for k in found}



# -- API tokens ----------------------------------------------------------------------------


def insert_token(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(api_tokens).values(**values))


def list_tokens(conn: Connection, user_name: str | None = None) -> list[Any]:
    stmt = (select(api_tokens, users.c.name.label("user_name"))
            .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
            .order_by(api_tokens.c.created_at))
    if user_name is not None:
        stmt = stmt.where(users.c.name == user_name)
    return list(conn.execute(stmt).all())


def revoke_token(conn: Connection, token_id: str, now: datetime) -> bool:
    result = conn.execute(update(api_tokens).where(
        api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None)).values(revoked_at=now))
    return result.rowcount == 1


def token_by_hash(conn: Connection, digest: str) -> Any:
    return conn.execute(
        select(api_tokens.c.permissions, api_tokens.c.expires_at, api_tokens.c.revoked_at,
               users.c.id, users.c.name, users.c.role, users.c.disabled)
        .select_from(api_tokens.join(users, users.c.id == api_tokens.c.user_id))
        .where(api_tokens.c.token_hash == digest)).first()


# -- quotas --------------------------------------------------------------------------------
# A bucket's limits are ``COALESCE(column, :default)`` with a negative value meaning
# unlimited, so a change of the settings' defaults applies to every bucket that has none.

def _int(name: str) -> Any:
    """A bound integer; typed, so PostgreSQL need not guess the type of ``:a <= :b``."""
    return bindparam(name, type_=BigInteger)


def _within(used: Any, reserved: Any, limit: Any, extra: Any) -> Any:
    return or_(limit < 0, used + reserved + extra <= limit)


_LIMIT_BYTES = func.coalesce(buckets.c.quota_bytes, _int("default_bytes"))
_LIMIT_OBJECTS = func.coalesce(buckets.c.quota_objects, _int("default_objects"))

#: The one statement that holds quota: it cannot overshoot, whoever runs concurrently.
_RESERVE = (
    update(buckets)
    .where(buckets.c.id == _int("b_id"),
           _within(buckets.c.used_bytes, buckets.c.reserved_bytes, _LIMIT_BYTES,
                   _int("add_bytes")),
           _within(buckets.c.used_objects, buckets.c.reserved_objects, _LIMIT_OBJECTS,
                   _int("add_objects")))
    .values(reserved_bytes=buckets.c.reserved_bytes + _int("add_bytes"),
            reserved_objects=buckets.c.reserved_objects + _int("add_objects"))
)

#: Commit a write: usage moves by the real delta and the reservation goes. A delta within
#: what was reserved (or released in the same transaction) always passes; more must fit.
_APPLY = (
    update(buckets)
    .where(buckets.c.id == _int("b_id"),
           or_(_int("d_bytes") <= _int("allow_bytes"),
               _within(buckets.c.used_bytes, buckets.c.reserved_bytes - _int("r_bytes"),
                       _LIMIT_BYTES, _int("d_bytes"))),
           or_(_int("d_objects") <= _int("allow_objects"),
               _within(buckets.c.used_objects,
                       buckets.c.reserved_objects - _int("r_objects"),
                       _LIMIT_OBJECTS, _int("d_objects"))))
    .values(used_bytes=buckets.c.used_bytes + _int("d_bytes"),
            used_objects=buckets.c.used_objects + _int("d_objects"),
            reserved_bytes=buckets.c.reserved_bytes - _int("r_bytes"),
            reserved_objects=buckets.c.reserved_objects - _int("r_objects"))
)

_ADJUST_USAGE = (
    update(buckets).where(buckets.c.id == _int("b_id"))
    .values(used_bytes=buckets.c.used_bytes + _int("d_bytes"),
            used_objects=buckets.c.used_objects + _int("d_objects"))
)

_LATEST_SIZE = select(objects.c.size).where(
    objects.c.bucket_id == bindparam("bucket_id"), objects.c.key == bindparam("key"),
    objects.c.is_latest.is_(True), objects.c.is_delete_marker.is_(False))


def latest_size(conn: Connection, bucket_id: int, key: str) -> int | None:
    value = conn.execute(_LATEST_SIZE, {"bucket_id": bucket_id, "key": key}).scalar()
    return None if value is None else int(value)


def reserve_quota(conn: Connection, *, bucket_id: int, add_bytes: int, add_objects: int,
                  defaults: tuple[int, int]) -> bool:
    result = conn.execute(_RESERVE, {
        "b_id": bucket_id, "add_bytes": add_bytes, "add_objects": add_objects,
        "default_bytes": defaults[0], "default_objects": defaults[1]})
    return result.rowcount == 1


def insert_reservation(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(quota_reservations).values(**values))


def take_reservation(conn: Connection, reservation_id: str) -> tuple[int, int] | None:
    """Remove a reservation row; its (bytes, objects), or None if it was already released
    (its instance was presumed dead)."""
    row = conn.execute(select(quota_reservations.c.bytes, quota_reservations.c.objects)
                       .where(quota_reservations.c.id == reservation_id)).first()
    if row is None:
        return None
    conn.execute(delete(quota_reservations).where(quota_reservations.c.id == reservation_id))
    return int(row.bytes), int(row.objects)


def apply_usage(conn: Connection, *, bucket_id: int, d_bytes: int, d_objects: int,
                reserved: tuple[int, int], allowance: tuple[int, int],
                defaults: tuple[int, int]) -> bool:
    result = conn.execute(_APPLY, {
        "b_id": bucket_id, "d_bytes": d_bytes, "d_objects": d_objects,
        "r_bytes": reserved[0], "r_objects": reserved[1],
        "allow_bytes": allowance[0], "allow_objects": allowance[1],
        "default_bytes": defaults[0], "default_objects": defaults[1]})
    return result.rowcount == 1


def release_reserved(conn: Connection, bucket_id: int, nbytes: int, nobjects: int) -> None:
    conn.execute(update(buckets).where(buckets.c.id == bucket_id).values(
        reserved_bytes=buckets.c.reserved_bytes - nbytes,
        reserved_objects=buckets.c.reserved_objects - nobjects))


def adjust_usage(conn: Connection, bucket_id: int, d_bytes: int, d_objects: int) -> None:
    conn.execute(_ADJUST_USAGE, {"b_id": bucket_id, "d_bytes": d_bytes, "d_objects": d_objects})


def upload_parts_size(conn: Connection, upload_id: str) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(multipart_parts.c.size), 0))
                            .where(multipart_parts.c.upload_id == upload_id)).scalar_one())


def set_bucket_limits(conn: Connection, bucket_id: int, values: dict[str, int | None]) -> bool:
    result = conn.execute(update(buckets).where(buckets.c.id == bucket_id).values(**values))
    return result.rowcount == 1


def buckets_with_owners(conn: Connection, name: str | None = None
                        ) -> list[tuple[BucketRecord, str]]:
    stmt = (select(buckets, users.c.name.label("owner_name"))
            .select_from(buckets.join(users, users.c.id == buckets.c.owner_id))
            .order_by(buckets.c.name))
    if name is not None:
        stmt = stmt.where(buckets.c.name == name)
    rows = conn.execute(stmt).all()
    return [(_bucket(r), r.owner_name) for r in rows]


def stored_usage(conn: Connection, bucket_id: int) -> tuple[int, int]:
    """What a bucket really holds, counted from its rows (fsck, tests)."""
    objs = conn.execute(select(func.count(), func.coalesce(func.sum(objects.c.size), 0))
                        .where(objects.c.bucket_id == bucket_id,
                               objects.c.is_delete_marker.is_(False))).one()
    parts = conn.execute(select(func.coalesce(func.sum(multipart_parts.c.size), 0))
                         .select_from(multipart_parts.join(
                             multipart_uploads,
                             multipart_uploads.c.id == multipart_parts.c.upload_id))
                         .where(multipart_uploads.c.bucket_id == bucket_id)).scalar_one()
    return int(objs[1]) + int(parts), int(objs[0])


# -- instances -----------------------------------------------------------------------------

def register_instance(conn: Connection, instance_id: str, now: datetime) -> None:
    conn.execute(insert(instances).values(id=instance_id, started_at=now, heartbeat_at=now))


def heartbeat(conn: Connection, instance_id: str, now: datetime) -> None:
    result = conn.execute(update(instances).where(instances.c.id == instance_id)
                          .values(heartbeat_at=now))
    if result.rowcount == 0:  # presumed dead by another instance, yet alive: come back
        register_instance(conn, instance_id, now)


def release_dead_instances(conn: Connection, stale_before: datetime, alive: str) -> int:
    """Release what instances silent since ``stale_before`` held; returns reservations
    released."""
    dead = select(instances.c.id).where(instances.c.heartbeat_at < stale_before,
                                        instances.c.id != alive)
    # Reservations of instances that never registered (or were already removed) too.
    orphan = ~quota_reservations.c.instance_id.in_(select(instances.c.id))
    cond = or_(quota_reservations.c.instance_id.in_(dead), orphan)
    cond = and_(cond, quota_reservations.c.instance_id != alive)
    sums = conn.execute(
        select(quota_reservations.c.bucket_id, func.sum(quota_reservations.c.bytes),
               func.sum(quota_reservations.c.objects), func.count())
        .where(cond).group_by(quota_reservations.c.bucket_id)).all()
    released = 0
    for bucket_id, nbytes, nobjects, count in sums:
        release_reserved(conn, bucket_id, int(nbytes), int(nobjects))
        released += int(count)
    conn.execute(delete(quota_reservations).where(cond))
    conn.execute(delete(instances).where(instances.c.heartbeat_at < stale_before,
                                         instances.c.id != alive))
    return released


# == passwords, sessions, groups and bucket grants ========================================
# (kept together at the end: gateway.service.sessions and gateway.service.groups)


def user_by_id(conn: Connection, user_id: int) -> Row[Any] | None:
    return conn.execute(select(users).where(users.c.id == user_id)).first()


_GROUP_IDS = (select(group_members.c.group_id)
              .where(group_members.c.user_id == bindparam("user_id"))
              .order_by(group_members.c.group_id))


def group_ids_for_user(conn: Connection, user_id: int) -> tuple[int, ...]:
    return tuple(int(g) for g in conn.execute(_GROUP_IDS, {"user_id": user_id}).scalars())


def group_names_for_user(conn: Connection, user_id: int) -> list[str]:
    stmt = (select(groups.c.name)
            .select_from(groups.join(group_members, group_members.c.group_id == groups.c.id))
            .where(group_members.c.user_id == user_id).order_by(groups.c.name))
    return list(conn.execute(stmt).scalars())


def set_password_hash(conn: Connection, name: str, password_hash: str | None) -> int | None:
    """Returns the user's id, None when there is no such user."""
    row = conn.execute(update(users).where(users.c.name == name)
                       .values(password_hash=password_hash).returning(users.c.id)).first()
    return int(row.id) if row else None


def set_user_role(conn: Connection, name: str, role: str) -> bool:
    result = conn.execute(update(users).where(users.c.name == name).values(role=role))
    return result.rowcount == 1


# -- sessions --------------------------------------------------------------------------------


def insert_session(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(sessions).values(**values))


_SESSION_BY_HASH = (
    select(sessions.c.expires_at, users.c.id, users.c.name, users.c.role, users.c.disabled)
    .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
    .where(sessions.c.token_hash == bindparam("digest"))
)


def session_by_hash(conn: Connection, digest: str) -> Any:
    return conn.execute(_SESSION_BY_HASH, {"digest": digest}).first()


def delete_session(conn: Connection, digest: str) -> bool:
    result = conn.execute(delete(sessions).where(sessions.c.token_hash == digest))
    return result.rowcount == 1


def delete_user_sessions(conn: Connection, user_id: int) -> int:
    return int(conn.execute(delete(sessions).where(sessions.c.user_id == user_id)).rowcount)


def delete_expired_sessions(conn: Connection, now: datetime) -> int:
    return int(conn.execute(delete(sessions).where(sessions.c.expires_at <= now)).rowcount)


# -- groups ----------------------------------------------------------------------------------


def insert_group(conn: Connection, name: str, now: datetime) -> int:
    result = conn.execute(insert(groups).values(name=name, created_at=now)
                          .returning(groups.c.id))
    return int(result.scalar_one())


def group_by_name(conn: Connection, name: str) -> Row[Any] | None:
    return conn.execute(select(groups).where(groups.c.name == name)).first()


def list_groups(conn: Connection) -> list[tuple[Row[Any], list[str]]]:
    """Every group with its members' names."""
    rows = conn.execute(select(groups).order_by(groups.c.name)).all()
    members: dict[int, list[str]] = {}
    for group_id, user_name in conn.execute(
            select(group_members.c.group_id, users.c.name)
            .select_from(group_members.join(users, users.c.id == group_members.c.user_id))
            .order_by(users.c.name)).all():
        members.setdefault(int(group_id), []).append(user_name)
    return [(r, members.get(int(r.id), [])) for r in rows]


def delete_group(conn: Connection, group_id: int) -> None:
    """The group, its memberships and the grants it held (grantee ids have no foreign key)."""
    conn.execute(delete(bucket_grants).where(bucket_grants.c.grantee_type == "group",
                                             bucket_grants.c.grantee_id == group_id))
    conn.execute(delete(group_members).where(group_members.c.group_id == group_id))
    conn.execute(delete(groups).where(groups.c.id == group_id))


def add_group_member(conn: Connection, group_id: int, user_id: int) -> bool:
    """False when the user was a member already."""
    present = conn.execute(select(group_members.c.user_id).where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id)).first()
    if present is not None:
        return False
    conn.execute(insert(group_members).values(group_id=group_id, user_id=user_id))
    return True


def remove_group_member(conn: Connection, group_id: int, user_id: int) -> bool:
    result = conn.execute(delete(group_members).where(
        group_members.c.group_id == group_id, group_members.c.user_id == user_id))
    return result.rowcount == 1


# -- bucket grants ---------------------------------------------------------------------------


def set_grant(conn: Connection, bucket_id: int, grantee_type: str, grantee_id: int,
              permission: str, now: datetime) -> None:
    """Create or change the one grant a grantee holds on a bucket."""
    g = bucket_grants.c
    where = (g.bucket_id == bucket_id, g.grantee_type == grantee_type,
             g.grantee_id == grantee_id)
    if conn.execute(update(bucket_grants).where(*where)
                    .values(permission=permission)).rowcount == 0:
        conn.execute(insert(bucket_grants).values(
            bucket_id=bucket_id, grantee_type=grantee_type, grantee_id=grantee_id,
            permission=permission, created_at=now))


def delete_grant(conn: Connection, bucket_id: int, grantee_type: str, grantee_id: int) -> bool:
    g = bucket_grants.c
    result = conn.execute(delete(bucket_grants).where(
        g.bucket_id == bucket_id, g.grantee_type == grantee_type, g.grantee_id == grantee_id))
    return result.rowcount == 1


def list_grants(conn: Connection, bucket_id: int) -> list[Any]:
    """A bucket's grants with their grantees' names (``grantee``)."""
    g = bucket_grants.c
    user_grants = (
        select(g.grantee_type, g.grantee_id, g.permission, g.created_at,
               users.c.name.label("grantee"))
        .select_from(bucket_grants.join(users, users.c.id == g.grantee_id))
        .where(g.bucket_id == bucket_id, g.grantee_type == "user"))
    group_grants = (
        select(g.grantee_type, g.grantee_id, g.permission, g.created_at,
               groups.c.name.label("grantee"))
        .select_from(bucket_grants.join(groups, groups.c.id == g.grantee_id))
        .where(g.bucket_id == bucket_id, g.grantee_type == "group"))
    rows = list(conn.execute(user_grants).all()) + list(conn.execute(group_grants).all())
    return sorted(rows, key=lambda r: (r.grantee_type != "user", r.grantee))


# Memberships are read here, in the same statement, rather than from the principal (which
# an access-key cache may hold for a few seconds): leaving a group takes effect at once.
_CALLER_GROUPS = (select(group_members.c.group_id)
                  .where(group_members.c.user_id == bindparam("user_id")))
_GRANTS_FOR_USER = select(bucket_grants.c.permission).where(
    bucket_grants.c.bucket_id == bindparam("bucket_id"),
    ((bucket_grants.c.grantee_type == "user")
     & (bucket_grants.c.grantee_id == bindparam("user_id")))
    | ((bucket_grants.c.grantee_type == "group")
       & bucket_grants.c.grantee_id.in_(_CALLER_GROUPS)))


def grant_permissions(conn: Connection, bucket_id: int, user_id: int) -> frozenset[str]:
    """The permissions a user holds on a bucket, directly or through their groups."""
    rows = conn.execute(_GRANTS_FOR_USER, {"bucket_id": bucket_id, "user_id": user_id})
    return frozenset(rows.scalars())


def list_buckets_visible(conn: Connection, user_id: int) -> list[BucketRecord]:
    """The buckets a user owns or holds a grant on (directly or through a group)."""
    g = bucket_grants.c
    granted = select(g.bucket_id).where(
        ((g.grantee_type == "user") & (g.grantee_id == user_id))
        | ((g.grantee_type == "group") & g.grantee_id.in_(
            select(group_members.c.group_id).where(group_members.c.user_id == user_id))))
    stmt = (select(buckets)
            .where((buckets.c.owner_id == user_id) | buckets.c.id.in_(granted))
            .order_by(buckets.c.name))
    return [_bucket(r) for r in conn.execute(stmt).all()]


# -- background jobs -------------------------------------------------------------------------


def claim_job(conn: Connection, name: str, owner: str, now: datetime,
              until: datetime, stale_before: datetime) -> bool:
    """Take or renew the lease on job ``name`` until ``until``: yes if nobody else holds an
    unexpired one — an instance silent since ``stale_before`` (dead) holds nothing. (A
    first claim racing another's insert fails on the primary key.)"""
    alive = select(instances.c.id).where(instances.c.heartbeat_at >= stale_before)
    renewed = conn.execute(update(job_leases).where(
        job_leases.c.name == name,
        or_(job_leases.c.owner == owner, job_leases.c.lease_until < now,
            job_leases.c.owner.not_in(alive)),
    ).values(owner=owner, lease_until=until))
    if renewed.rowcount == 1:
        return True
    if conn.execute(select(job_leases.c.name).where(job_leases.c.name == name)).first():
        return False
    conn.execute(insert(job_leases).values(name=name, owner=owner, lease_until=until, runs=0))
    return True


def job_ran(conn: Connection, name: str, owner: str, now: datetime) -> None:
    conn.execute(update(job_leases).where(job_leases.c.name == name,
                                          job_leases.c.owner == owner)
                 .values(runs=job_leases.c.runs + 1, last_run_at=now))


_LOCK_BUCKET = select(buckets.c.versioning).where(
    buckets.c.id == bindparam("bucket_id")).with_for_update()


def lock_bucket(conn: Connection, bucket_id: int) -> str | None:
    """Take the bucket row's lock first (PostgreSQL; SQLite has one writer anyway): every
    unit that moves a bucket's counters and touches its objects or uploads takes the locks
    in this order, so two of them never wait for each other (a deadlock). Answers the
    bucket's versioning state as of the lock (None: never versioned, or no such bucket)."""
    row = conn.execute(_LOCK_BUCKET, {"bucket_id": bucket_id}).first()
    return row.versioning if row is not None else None


def set_bucket_versioning(conn: Connection, bucket_id: int, state: str) -> None:
    conn.execute(update(buckets).where(buckets.c.id == bucket_id).values(versioning=state))


# == the bot platform: scoped keys, customers, bots, bot users, conversations =============
# (kept together at the end: gateway.service.bots)

from gateway.metadata.models import (  # noqa: E402
    bot_admins,
    bot_users,
    bots,
    change_counter,
    conversation_bots,
    conversation_members,
    conversations,
    customers,
)

_PRINCIPAL_AND_SCOPE_FOR_KEY = (
    select(users.c.id, users.c.name, users.c.role, access_keys.c.secret,
           access_keys.c.bucket_scope)
    .select_from(access_keys.join(users, users.c.id == access_keys.c.user_id))
    .where(access_keys.c.access_key == bindparam("access_key"),
           access_keys.c.enabled.is_(True), users.c.disabled.is_(False))
)


def principal_and_scope_for_access_key(
    conn: Connection, access_key: str
) -> tuple[Principal, str] | None:
    """The user behind an enabled access key (with the key's bucket scope), and the key's
    secret."""
    row = conn.execute(_PRINCIPAL_AND_SCOPE_FOR_KEY, {"access_key": access_key}).first()
    if row is None:
        return None
    return Principal(row.id, row.name, row.role, access_key,
                     bucket_scope=row.bucket_scope), row.secret


def insert_scoped_access_key(conn: Connection, access_key: str, user_id: int, secret: str,
                             now: datetime, bucket_scope: str | None) -> None:
    conn.execute(insert(access_keys).values(
        access_key=access_key, user_id=user_id, secret=secret, enabled=True, created_at=now,
        bucket_scope=bucket_scope))


def oldest_unscoped_key(conn: Connection, user_id: int) -> tuple[str, str] | None:
    """(access key, sealed secret) of a user's oldest enabled key that reaches every bucket
    (a bot's package key would sign URLs for its bucket alone)."""
    row = conn.execute(
        select(access_keys.c.access_key, access_keys.c.secret)
        .where(access_keys.c.user_id == user_id, access_keys.c.enabled.is_(True),
               access_keys.c.bucket_scope.is_(None))
        .order_by(access_keys.c.created_at, access_keys.c.access_key).limit(1)).first()
    return (str(row.access_key), str(row.secret)) if row else None


def current_change_seq(conn: Connection) -> int:
    """The last change-log sequence number handed out (0 before any)."""
    value = conn.execute(select(change_counter.c.value)
                         .where(change_counter.c.id == 1)).scalar()
    return int(value or 0)


def _ordered_page(conn: Connection, stmt: Any, where: Sequence[Any], order: Any,
                  tiebreak: Any, descending: bool, limit: int, offset: int
                  ) -> tuple[list[Any], int]:
    """One page of ``stmt`` (rows in ``order``, then ``tiebreak``) and the total count."""
    total = int(conn.execute(select(func.count()).select_from(
        stmt.where(*where).subquery())).scalar_one())
    ordering = [order.desc() if descending else order.asc(),
                tiebreak.desc() if descending else tiebreak.asc()]
    rows = conn.execute(stmt.where(*where).order_by(*ordering)
                        .limit(limit).offset(offset)).all()
    return list(rows), total


# -- customers -------------------------------------------------------------------------------


def customer_by_id(conn: Connection, customer_id: str) -> Row[Any] | None:
    return conn.execute(select(customers).where(customers.c.id == customer_id)).first()


def customer_by_user(conn: Connection, user_id: int) -> Row[Any] | None:
    return conn.execute(select(customers).where(customers.c.user_id == user_id)).first()


def insert_customer(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(customers).values(**values))


def update_customer(conn: Connection, customer_id: str, values: dict[str, Any]) -> bool:
    result = conn.execute(update(customers).where(customers.c.id == customer_id)
                          .values(**values))
    return result.rowcount == 1


def bot_ids_of_customer(conn: Connection, customer_id: str) -> list[str]:
    return list(conn.execute(select(bots.c.id).where(bots.c.customer_id == customer_id)
                             .order_by(bots.c.created_at, bots.c.id)).scalars())


# -- bots ------------------------------------------------------------------------------------

BOT_SORT_COLUMNS = {"id": bots.c.id, "name": bots.c.name, "createdAt": bots.c.created_at,
                    "state": bots.c.state, "customerId": bots.c.customer_id,
                    "error_count": bots.c.error_count}
BOT_FILTER_COLUMNS = {"id": bots.c.id, "name": bots.c.name, "state": bots.c.state,
                      "customerId": bots.c.customer_id, "bucket": bots.c.bucket,
                      "url": bots.c.url}


def bot_by_id(conn: Connection, bot_id: str) -> Row[Any] | None:
    return conn.execute(select(bots).where(bots.c.id == bot_id)).first()


def bot_by_name(conn: Connection, name: str) -> Row[Any] | None:
    return conn.execute(select(bots).where(bots.c.name == name)).first()


def bot_by_bucket(conn: Connection, bucket: str) -> Row[Any] | None:
    return conn.execute(select(bots).where(bots.c.bucket == bucket)).first()


def insert_bot(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(bots).values(**values))


def update_bot(conn: Connection, bot_id: str, values: dict[str, Any]) -> bool:
    result = conn.execute(update(bots).where(bots.c.id == bot_id).values(**values))
    return result.rowcount == 1


def delete_bot(conn: Connection, bot_id: str) -> bool:
    """The bot with its admins, users and conversation links (no cascade on SQLite)."""
    conn.execute(delete(bot_admins).where(bot_admins.c.bot_id == bot_id))
    conn.execute(delete(bot_users).where(bot_users.c.bot_id == bot_id))
    conn.execute(delete(conversation_bots).where(conversation_bots.c.bot_id == bot_id))
    return conn.execute(delete(bots).where(bots.c.id == bot_id)).rowcount == 1


def list_bots(conn: Connection, *, visible_to: str | None, everyone: bool,
              filters: dict[str, Any], sort: str, descending: bool, limit: int,
              offset: int) -> tuple[list[Any], int]:
    """A page of bots: all of them (``everyone``), else those the customer ``visible_to``
    owns or administers (none without a customer)."""
    where: list[Any] = [BOT_FILTER_COLUMNS[name] == value for name, value in filters.items()]
    if not everyone:
        administered = select(bot_admins.c.bot_id).where(bot_admins.c.customer_id == visible_to)
        where.append(or_(bots.c.customer_id == visible_to, bots.c.id.in_(administered)))
    return _ordered_page(conn, select(bots), where, BOT_SORT_COLUMNS[sort], bots.c.id,
                         descending, limit, offset)


def all_bots(conn: Connection) -> list[Any]:
    return list(conn.execute(select(bots).order_by(bots.c.name)).all())


def bot_admin_ids(conn: Connection, bot_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {bot_id: [] for bot_id in bot_ids}
    if bot_ids:
        for bot_id, customer_id in conn.execute(
                select(bot_admins.c.bot_id, bot_admins.c.customer_id)
                .where(bot_admins.c.bot_id.in_(list(bot_ids)))
                .order_by(bot_admins.c.customer_id)).all():
            found[bot_id].append(customer_id)
    return found


def bot_user_ids(conn: Connection, bot_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {bot_id: [] for bot_id in bot_ids}
    if bot_ids:
        for bot_id, user_id in conn.execute(
                select(bot_users.c.bot_id, bot_users.c.id)
                .where(bot_users.c.bot_id.in_(list(bot_ids)))
                .order_by(bot_users.c.created_at, bot_users.c.id)).all():
            found[bot_id].append(user_id)
    return found


def is_bot_admin(conn: Connection, bot_id: str, customer_id: str) -> bool:
    stmt = select(exists().where(bot_admins.c.bot_id == bot_id,
                                 bot_admins.c.customer_id == customer_id))
    return bool(conn.execute(stmt).scalar())


def add_bot_admin(conn: Connection, bot_id: str, customer_id: str) -> bool:
    """False when the customer administered the bot already."""
    if is_bot_admin(conn, bot_id, customer_id):
        return False
    conn.execute(insert(bot_admins).values(bot_id=bot_id, customer_id=customer_id))
    return True


# -- bot users (a bot's chat recipients) ------------------------------------------------------

BOT_USER_SORT_COLUMNS = {"id": bot_users.c.id, "createdAt": bot_users.c.created_at,
                         "externalId": bot_users.c.external_id,
                         "botStatus": bot_users.c.bot_status}
BOT_USER_FILTER_COLUMNS = {"id": bot_users.c.id, "externalId": bot_users.c.external_id,
                           "botStatus": bot_users.c.bot_status,
                           "customerId": bot_users.c.customer_id}


def insert_bot_user(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(insert(bot_users).values(**values))


def bot_user(conn: Connection, bot_id: str, user_id: str) -> Row[Any] | None:
    return conn.execute(select(bot_users).where(bot_users.c.id == user_id,
                                                bot_users.c.bot_id == bot_id)).first()


def bot_users_by_ids(conn: Connection, bot_id: str, user_ids: Sequence[str]) -> list[Any]:
    return list(conn.execute(select(bot_users).where(
        bot_users.c.bot_id == bot_id, bot_users.c.id.in_(list(user_ids)))).all())


def bot_user_by_external_id(conn: Connection, bot_id: str, external_id: str
                            ) -> Row[Any] | None:
    return conn.execute(select(bot_users).where(
        bot_users.c.bot_id == bot_id, bot_users.c.external_id == external_id)
        .order_by(bot_users.c.created_at).limit(1)).first()


def update_bot_user(conn: Connection, user_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(bot_users).where(bot_users.c.id == user_id).values(**values))


def list_bot_users(conn: Connection, bot_id: str, *, filters: dict[str, Any], sort: str,
                   descending: bool, limit: int, offset: int) -> tuple[list[Any], int]:
    where = [bot_users.c.bot_id == bot_id,
             *(BOT_USER_FILTER_COLUMNS[name] == value for name, value in filters.items())]
    return _ordered_page(conn, select(bot_users), where, BOT_USER_SORT_COLUMNS[sort],
                         bot_users.c.id, descending, limit, offset)


# -- conversations ---------------------------------------------------------------------------


def insert_conversation(conn: Connection, values: dict[str, Any],
                        members: Sequence[tuple[int, str]]) -> None:
    conn.execute(insert(conversations).values(**values))
    conn.execute(insert(conversation_members), [
        {"conversation_id": values["id"], "user_id": user_id, "role": role}
        for user_id, role in members])


def conversation_by_id(conn: Connection, conversation_id: str) -> Row[Any] | None:
    return conn.execute(select(conversations)
                        .where(conversations.c.id == conversation_id)).first()


def conversation_members_of(conn: Connection, conversation_ids: Sequence[str]
                            ) -> dict[str, list[Any]]:
    """Each conversation's members (``user_id``, ``name``, ``role``), by user name."""
    found: dict[str, list[Any]] = {cid: [] for cid in conversation_ids}
    if conversation_ids:
        m = conversation_members.c
        for row in conn.execute(
                select(m.conversation_id, m.user_id, m.role, users.c.name)
                .select_from(conversation_members.join(users, users.c.id == m.user_id))
                .where(m.conversation_id.in_(list(conversation_ids)))
                .order_by(users.c.name)).all():
            found[row.conversation_id].append(row)
    return found


def conversation_bot_ids(conn: Connection, conversation_ids: Sequence[str]
                         ) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {cid: [] for cid in conversation_ids}
    if conversation_ids:
        c = conversation_bots.c
        for cid, bot_id in conn.execute(
                select(c.conversation_id, c.bot_id)
                .where(c.conversation_id.in_(list(conversation_ids)))
                .order_by(c.created_at, c.bot_id)).all():
            found[cid].append(bot_id)
    return found


def member_role(conn: Connection, conversation_id: str, user_id: int) -> str | None:
    m = conversation_members.c
    role = conn.execute(select(m.role).where(m.conversation_id == conversation_id,
                                             m.user_id == user_id)).scalar()
    return str(role) if role is not None else None


def set_member(conn: Connection, conversation_id: str, user_id: int, role: str) -> bool:
    """Add a member or change their role; True when they were added."""
    m = conversation_members.c
    changed = conn.execute(update(conversation_members).where(
        m.conversation_id == conversation_id, m.user_id == user_id).values(role=role))
    if changed.rowcount == 1:
        return False
    conn.execute(insert(conversation_members).values(
        conversation_id=conversation_id, user_id=user_id, role=role))
    return True


def remove_member(conn: Connection, conversation_id: str, user_id: int) -> bool:
    m = conversation_members.c
    result = conn.execute(delete(conversation_members).where(
        m.conversation_id == conversation_id, m.user_id == user_id))
    return result.rowcount == 1


def enable_conversation_bot(conn: Connection, conversation_id: str, bot_id: str,
                            now: datetime) -> bool:
    """False when the bot was enabled in the conversation already."""
    c = conversation_bots.c
    present = conn.execute(select(c.bot_id).where(c.conversation_id == conversation_id,
                                                  c.bot_id == bot_id)).first()
    if present is not None:
        return False
    conn.execute(insert(conversation_bots).values(conversation_id=conversation_id,
                                                  bot_id=bot_id, created_at=now))
    return True


def disable_conversation_bot(conn: Connection, conversation_id: str, bot_id: str) -> bool:
    c = conversation_bots.c
    result = conn.execute(delete(conversation_bots).where(c.conversation_id == conversation_id,
                                                          c.bot_id == bot_id))
    return result.rowcount == 1


# -- the rows the bot platform's lists page through ------------------------------------------

from sqlalchemy import Select, false  # noqa: E402

#: Conversations joined with their owner's user row (for the ``owner`` field).
conversation_owners = users.alias("conversation_owner")


def visible_bots(customer_id: str | None, *, everyone: bool) -> Select[Any]:
    """Every bot (``everyone``), else those the customer owns or administers; none for a
    caller without a customer. The query layer adds filters, order and bounds."""
    stmt = select(bots)
    if everyone:
        return stmt
    if customer_id is None:
        return stmt.where(false())
    administered = select(bot_admins.c.bot_id).where(bot_admins.c.customer_id == customer_id)
    return stmt.where(or_(bots.c.customer_id == customer_id, bots.c.id.in_(administered)))


def users_of_bot(bot_id: str) -> Select[Any]:
    """A bot's chat users."""
    return select(bot_users).where(bot_users.c.bot_id == bot_id)


def conversations_of_member(user_id: int) -> Select[Any]:
    """The conversations ``user_id`` takes part in, with their role (``member_role``) and
    the owner's name (``owner_name``)."""
    m = conversation_members.c
    return (select(conversations, m.role.label("member_role"),
                   conversation_owners.c.name.label("owner_name"))
            .select_from(conversations
                         .join(conversation_members, m.conversation_id == conversations.c.id)
                         .join(conversation_owners,
                               conversation_owners.c.id == conversations.c.owner_id))
            .where(m.user_id == user_id))
