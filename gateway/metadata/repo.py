"""Every SQL statement the service runs, in portable SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.metadata.models import NULL_VERSION, access_keys, buckets, objects, users
from gateway.types import BucketRecord, ObjectRecord, Principal

# -- identities ----------------------------------------------------------------------------


async def principal_for_access_key(
    conn: AsyncConnection, access_key: str
) -> tuple[Principal, str] | None:
    """The user behind an enabled access key, and the key's secret."""
    row = (await conn.execute(
        select(users.c.id, users.c.name, users.c.role, access_keys.c.secret)
        .select_from(access_keys.join(users, users.c.id == access_keys.c.user_id))
        .where(access_keys.c.access_key == access_key, access_keys.c.enabled.is_(True))
    )).first()
    if row is None:
        return None
    return Principal(row.id, row.name, row.role, access_key), row.secret


async def user_by_name(conn: AsyncConnection, name: str) -> Row[Any] | None:
    return (await conn.execute(select(users).where(users.c.name == name))).first()


async def user_name(conn: AsyncConnection, user_id: int) -> str | None:
    row = (await conn.execute(select(users.c.name).where(users.c.id == user_id))).first()
    return row.name if row else None


async def count_users(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(users))).scalar_one())


async def insert_user(conn: AsyncConnection, name: str, role: str, now: datetime) -> int:
    result = await conn.execute(
        insert(users).values(name=name, role=role, created_at=now).returning(users.c.id))
    return int(result.scalar_one())


async def access_key_row(conn: AsyncConnection, access_key: str) -> Row[Any] | None:
    return (await conn.execute(
        select(access_keys).where(access_keys.c.access_key == access_key))).first()


async def insert_access_key(conn: AsyncConnection, access_key: str, user_id: int,
                            secret: str, now: datetime) -> None:
    await conn.execute(insert(access_keys).values(
        access_key=access_key, user_id=user_id, secret=secret, enabled=True, created_at=now))


async def update_access_key(conn: AsyncConnection, access_key: str, *, secret: str,
                            user_id: int) -> None:
    await conn.execute(update(access_keys).where(access_keys.c.access_key == access_key)
                       .values(secret=secret, user_id=user_id, enabled=True))


# -- buckets -------------------------------------------------------------------------------


def _bucket(row: Row[Any]) -> BucketRecord:
    return BucketRecord(row.id, row.name, row.owner_id, row.region, row.created_at)


async def bucket_by_name(conn: AsyncConnection, name: str) -> BucketRecord | None:
    row = (await conn.execute(select(buckets).where(buckets.c.name == name))).first()
    return _bucket(row) if row else None


async def list_buckets(conn: AsyncConnection, owner_id: int | None) -> list[BucketRecord]:
    stmt = select(buckets).order_by(buckets.c.name)
    if owner_id is not None:
        stmt = stmt.where(buckets.c.owner_id == owner_id)
    return [_bucket(r) for r in (await conn.execute(stmt)).all()]


async def insert_bucket(conn: AsyncConnection, name: str, owner_id: int, region: str,
                        now: datetime) -> BucketRecord:
    result = await conn.execute(insert(buckets).values(
        name=name, owner_id=owner_id, region=region, created_at=now).returning(buckets.c.id))
    return BucketRecord(int(result.scalar_one()), name, owner_id, region, now)


async def bucket_has_objects(conn: AsyncConnection, bucket_id: int) -> bool:
    stmt = select(exists().where(objects.c.bucket_id == bucket_id))
    return bool((await conn.execute(stmt)).scalar())


async def delete_bucket(conn: AsyncConnection, bucket_id: int) -> None:
    await conn.execute(delete(buckets).where(buckets.c.id == bucket_id))


# -- objects -------------------------------------------------------------------------------

_OBJECT_COLUMNS = (
    objects.c.id, objects.c.bucket_id, objects.c.key, objects.c.version_id, objects.c.size,
    objects.c.etag, objects.c.last_modified, objects.c.blob_key, objects.c.content_type,
    objects.c.user_metadata, objects.c.headers, objects.c.checksum_algorithm,
    objects.c.checksum_value, objects.c.storage_class, objects.c.is_delete_marker,
)


def _object(row: Any) -> ObjectRecord:
    return ObjectRecord(
        id=row.id, bucket_id=row.bucket_id, key=row.key, version_id=row.version_id,
        size=row.size, etag=row.etag, last_modified=row.last_modified, blob_key=row.blob_key,
        content_type=row.content_type, user_metadata=dict(row.user_metadata or {}),
        headers=dict(row.headers or {}), checksum_algorithm=row.checksum_algorithm,
        checksum_value=row.checksum_value, storage_class=row.storage_class,
        is_delete_marker=row.is_delete_marker,
    )


async def latest_object(conn: AsyncConnection, bucket_id: int, key: str) -> ObjectRecord | None:
    row = (await conn.execute(
        select(*_OBJECT_COLUMNS).where(
            objects.c.bucket_id == bucket_id, objects.c.key == key,
            objects.c.is_latest.is_(True))
    )).first()
    return _object(row) if row else None


async def bucket_and_latest_object(
    conn: AsyncConnection, bucket_name: str, key: str
) -> tuple[BucketRecord | None, ObjectRecord | None]:
    """One round trip for the hot read path: the bucket and its latest object row."""
    stmt = (
        select(buckets.c.id.label("b_id"), buckets.c.name.label("b_name"),
               buckets.c.owner_id.label("b_owner"), buckets.c.region.label("b_region"),
               buckets.c.created_at.label("b_created"), *_OBJECT_COLUMNS)
        .select_from(buckets.outerjoin(objects, and_(
            objects.c.bucket_id == buckets.c.id, objects.c.key == key,
            objects.c.is_latest.is_(True))))
        .where(buckets.c.name == bucket_name)
    )
    row = (await conn.execute(stmt)).first()
    if row is None:
        return None, None
    bucket = BucketRecord(row.b_id, row.b_name, row.b_owner, row.b_region, row.b_created)
    return bucket, (_object(row) if row.id is not None else None)


async def insert_object(conn: AsyncConnection, values: dict[str, Any]) -> int:
    result = await conn.execute(insert(objects).values(**values).returning(objects.c.id))
    return int(result.scalar_one())


async def replace_object(conn: AsyncConnection, object_id: int, expected_blob_key: str | None,
                         values: dict[str, Any]) -> bool:
    """Compare-and-swap on the blob key: False if another writer got there first."""
    cond = [objects.c.id == object_id]
    cond.append(objects.c.blob_key.is_(None) if expected_blob_key is None
                else objects.c.blob_key == expected_blob_key)
    result = await conn.execute(update(objects).where(*cond).values(**values))
    return result.rowcount == 1


async def delete_object_row(conn: AsyncConnection, object_id: int,
                            expected_blob_key: str | None) -> bool:
    cond = [objects.c.id == object_id]
    cond.append(objects.c.blob_key.is_(None) if expected_blob_key is None
                else objects.c.blob_key == expected_blob_key)
    result = await conn.execute(delete(objects).where(*cond))
    return result.rowcount == 1


async def list_latest(
    conn: AsyncConnection, bucket_id: int, *, after: str | None, after_inclusive: bool,
    prefix: str, upper: str | None, limit: int,
) -> Sequence[ObjectRecord]:
    """Latest, non-deleted object rows in key (byte) order, bounded below and above."""
    cond = [objects.c.bucket_id == bucket_id, objects.c.is_latest.is_(True),
            objects.c.is_delete_marker.is_(False)]
    if after is not None:
        cond.append(objects.c.key >= after if after_inclusive else objects.c.key > after)
    if prefix:
        cond.append(objects.c.key >= prefix)
    if upper is not None:
        cond.append(objects.c.key < upper)
    stmt = select(*_OBJECT_COLUMNS).where(*cond).order_by(objects.c.key).limit(limit)
    return [_object(r) for r in (await conn.execute(stmt)).all()]


async def blob_is_referenced(conn: AsyncConnection, blob_key: str) -> bool:
    stmt = select(exists().where(objects.c.blob_key == blob_key))
    return bool((await conn.execute(stmt)).scalar())


NULL = NULL_VERSION
