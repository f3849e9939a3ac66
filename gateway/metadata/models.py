"""Tables, as SQLAlchemy Core metadata. Alembic migrations in ``migrations/`` create them.

Object keys compare in UTF-8 byte order on every database: SQLite's default BINARY
collation already does; PostgreSQL columns get ``COLLATE "C"``.

``objects`` holds a row per object *version* with an ``is_latest`` flag, so versioning
can arrive without a schema rewrite. Unversioned buckets keep exactly one row per key,
with ``version_id = 'null'`` (S3's name for it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)

NULL_VERSION = "null"

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (portable), returned as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


#: Integer primary keys: BIGINT on PostgreSQL, INTEGER (rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")
#: Object keys in byte order everywhere.
KeyString = Text().with_variant(Text(collation="C"), "postgresql")
BucketName = String(63).with_variant(String(63, collation="C"), "postgresql")

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("display_name", String(256), nullable=True),
    Column("email", String(320), nullable=True),
    #: The id S3 answers show as Owner; derived from the user id when not set.
    Column("canonical_id", String(128), nullable=True),
    Column("disabled", Boolean(), nullable=False, default=False, server_default=false()),
    #: scrypt hash (``gateway.auth.passwords``); NULL: the user cannot log in by password.
    Column("password_hash", String(256), nullable=True),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key", String(128), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("secret", String(256), nullable=False),
    Column("enabled", Boolean(), nullable=False, default=True),
    Column("created_at", UTCDateTime(), nullable=False),
    #: A key scoped to one bucket (a bot's package key): it can reach nothing else.
    Column("bucket_scope", String(63), nullable=True),
)

buckets = Table(
    "buckets",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", BucketName, nullable=False, unique=True),
    Column("owner_id", BigId, ForeignKey("users.id"), nullable=False, index=True),
    Column("region", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    #: Canned ACL: "private", "public-read", …
    Column("acl", String(32), nullable=False, default="private", server_default="private"),
    #: CORS rules (``gateway.s3.cors``), or NULL when none are configured.
    Column("cors", JSON(), nullable=True),
    # Quota limits: NULL follows the settings' default, a negative value is unlimited.
    Column("quota_bytes", BigInteger(), nullable=True),
    Column("quota_objects", BigInteger(), nullable=True),
    Column("max_object_size", BigInteger(), nullable=True),
    #: Bytes of committed objects *and* of uploaded multipart parts.
    Column("used_bytes", BigInteger(), nullable=False, default=0, server_default="0"),
    Column("used_objects", BigInteger(), nullable=False, default=0, server_default="0"),
    #: Held by writes in flight (``quota_reservations``), released when they end.
    Column("reserved_bytes", BigInteger(), nullable=False, default=0, server_default="0"),
    Column("reserved_objects", BigInteger(), nullable=False, default=0, server_default="0"),
    #: NULL until versioning is first configured, then ``Enabled`` or ``Suspended``.
    Column("versioning", String(16), nullable=True),
    #: Bucket tags (name -> value), or NULL.
    Column("tags", JSON(), nullable=True),
    #: Lifecycle rules (``gateway.service.lifecycle``), or NULL.
    Column("lifecycle", JSON(), nullable=True),
    #: Default server-side encryption, or NULL.
    Column("encryption", JSON(), nullable=True),
)

#: Gateway processes alive (heartbeat), so what a dead one held can be released.
instances = Table(
    "instances",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
)

#: Background jobs run by one instance at a time: the holder of an unexpired lease.
job_leases = Table(
    "job_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(32), nullable=False),
    Column("lease_until", UTCDateTime(), nullable=False),
    Column("runs", BigInteger, nullable=False, server_default="0"),
    Column("last_run_at", UTCDateTime(), nullable=True),
)

#: Quota held by one write in flight; the bucket's ``reserved_*`` are their sum.
quota_reservations = Table(
    "quota_reservations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("bucket_id", BigId, ForeignKey("buckets.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("bytes", BigInteger(), nullable=False),
    Column("objects", Integer(), nullable=False),
    Column("instance_id", String(32), nullable=False, index=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

groups = Table(
    "groups",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", BigId, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
           index=True),
)

#: Who besides the owner may use a bucket: ``read`` (list, get), ``write`` (put, delete,
#: multipart) or ``full`` (read + write + the bucket's ACL, CORS and grants).
bucket_grants = Table(
    "bucket_grants",
    metadata,
    Column("bucket_id", BigId, ForeignKey("buckets.id", ondelete="CASCADE"), primary_key=True),
    Column("grantee_type", String(8), primary_key=True),  # "user" | "group"
    Column("grantee_id", BigId, primary_key=True),
    Column("permission", String(8), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_bucket_grants_grantee", "grantee_type", "grantee_id"),
)

#: Bearer sessions of the JSON API (``POST /api/v1/auth/login``); only a SHA-256 is kept.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

objects = Table(
    "objects",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("bucket_id", BigId, ForeignKey("buckets.id"), nullable=False),
    Column("key", KeyString, nullable=False),
    Column("version_id", String(64), nullable=False, default=NULL_VERSION),
    Column("is_latest", Boolean(), nullable=False, default=True),
    Column("is_delete_marker", Boolean(), nullable=False, default=False),
    Column("size", BigInteger(), nullable=False),
    Column("etag", String(64), nullable=False),
    Column("last_modified", UTCDateTime(), nullable=False),
    Column("blob_key", String(512), nullable=True),
    Column("content_type", String(1024), nullable=True),
    #: x-amz-meta-* (names lower-cased, without the prefix) -> value
    Column("user_metadata", JSON(), nullable=False, default=dict),
    #: Content-Encoding, Content-Disposition, Content-Language, Cache-Control, Expires
    Column("headers", JSON(), nullable=False, default=dict),
    Column("checksum_algorithm", String(16), nullable=True),
    Column("checksum_value", String(128), nullable=True),
    Column("storage_class", String(32), nullable=False, default="STANDARD"),
    Column("owner_id", BigId, ForeignKey("users.id"), nullable=True),
    #: Completed multipart uploads: how many parts (their layout is in ``object_parts``).
    Column("parts_count", Integer(), nullable=True),
    Column("acl", String(32), nullable=False, default="private", server_default="private"),
    #: Object tags (name -> value), or NULL.
    Column("tags", JSON(), nullable=True),
    #: Server-side encryption parameters (algorithm, wrapped data key, …), or NULL.
    Column("encryption", JSON(), nullable=True),
    #: When a newer version (or delete marker) took this one's place; NULL while latest.
    Column("noncurrent_since", UTCDateTime(), nullable=True),
    UniqueConstraint("bucket_id", "key", "version_id", name="uq_objects_bucket_key_version"),
    Index("ix_objects_listing", "bucket_id", "is_latest", "key"),
    Index("ix_objects_blob_key", "blob_key"),
    # The object search (``gateway.service.query``): ordered by one of these, tie on key.
    Index("ix_objects_search_size", "bucket_id", "is_latest", "size", "key"),
    Index("ix_objects_search_modified", "bucket_id", "is_latest", "last_modified", "key"),
    Index("ix_objects_search_type", "bucket_id", "is_latest", "content_type", "key"),
    # A key's versions, newest (highest id) first: ListObjectVersions and version lookups.
    Index("ix_objects_versions", "bucket_id", "key", "id"),
    Index("ix_objects_noncurrent", "is_latest", "noncurrent_since"),
)

#: The parts of an object completed from a multipart upload (for ``?partNumber=N``).
object_parts = Table(
    "object_parts",
    metadata,
    Column("object_id", BigId, ForeignKey("objects.id", ondelete="CASCADE"), primary_key=True),
    Column("part_number", Integer(), primary_key=True),
    Column("offset", BigInteger(), nullable=False),
    Column("size", BigInteger(), nullable=False),
    Column("etag", String(64), nullable=False),
    Column("checksum_value", String(128), nullable=True),
)

#: Multipart uploads in progress. ``state`` is ``active``, or ``completing`` from the moment
#: CompleteMultipartUpload has chosen the parts until the object row commits.
multipart_uploads = Table(
    "multipart_uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("bucket_id", BigId, ForeignKey("buckets.id"), nullable=False),
    Column("key", KeyString, nullable=False),
    Column("blob_key", String(512), nullable=False),
    Column("backend_upload_id", String(256), nullable=False),
    Column("owner_id", BigId, ForeignKey("users.id"), nullable=False),
    Column("initiated_at", UTCDateTime(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("content_type", String(1024), nullable=True),
    Column("user_metadata", JSON(), nullable=False),
    Column("headers", JSON(), nullable=False),
    Column("storage_class", String(32), nullable=False),
    Column("checksum_algorithm", String(16), nullable=True),
    Column("checksum_type", String(16), nullable=True),
    Column("acl", String(32), nullable=False, default="private", server_default="private"),
    Column("tags", JSON(), nullable=True),
    Column("encryption", JSON(), nullable=True),
    Index("ix_multipart_uploads_listing", "bucket_id", "key", "initiated_at"),
    Index("ix_multipart_uploads_initiated", "initiated_at"),
    Index("ix_multipart_uploads_blob_key", "blob_key"),
)

multipart_parts = Table(
    "multipart_parts",
    metadata,
    Column("upload_id", String(64), ForeignKey("multipart_uploads.id", ondelete="CASCADE"),
           primary_key=True),
    Column("part_number", Integer(), primary_key=True),
    Column("size", BigInteger(), nullable=False),
    Column("etag", String(64), nullable=False),
    Column("checksum_value", String(128), nullable=True),
    Column("token", String(128), nullable=False),
    Column("last_modified", UTCDateTime(), nullable=False),
)

#: API tokens for the JSON API (``X-Api-Key``). Only a SHA-256 of each token is kept.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("name", String(128), nullable=False),
    Column("permissions", JSON(), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("token_prefix", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
)


# -- the bot platform (0009) ------------------------------------------------------------------

#: The change log: every object create, overwrite and delete, in commit order. ``seq`` comes
#: from ``change_counter`` inside the committing transaction, so it is gapless and a reader
#: that saw ``seq = n`` has seen every change before it. Rows outlive their bucket.
changes = Table(
    "changes",
    metadata,
    Column("seq", BigInteger(), primary_key=True, autoincrement=False),
    Column("bucket_id", BigId, nullable=False),
    Column("bucket", BucketName, nullable=False),
    Column("key", KeyString, nullable=False),
    #: S3's event names: ``s3:ObjectCreated:Put``, ``s3:ObjectRemoved:Delete``, …
    Column("event", String(64), nullable=False),
    Column("size", BigInteger(), nullable=True),
    Column("etag", String(64), nullable=True),
    Column("version_id", String(64), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_changes_bucket_seq", "bucket", "seq"),
    Index("ix_changes_created_at", "created_at"),
)

#: One row (id 1): the last ``changes.seq`` handed out. Its row lock orders the commits.
change_counter = Table(
    "change_counter",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=False),
    Column("value", BigInteger(), nullable=False),
)

#: Uploads refused by a package rule or the malware scanner, for admins to review.
upload_rejections = Table(
    "upload_rejections",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("bucket", BucketName, nullable=False),
    Column("key", KeyString, nullable=False),
    #: ``infected``, ``unscannable``, ``type`` or ``size``
    Column("reason", String(16), nullable=False),
    Column("detail", Text(), nullable=True),
    Column("principal", String(128), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False, index=True),
)

#: Customers (the Control Tower reference): one per gateway user who owns bots.
customers = Table(
    "customers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False,
           unique=True),
    Column("name", String(256), nullable=True),
    Column("email", String(320), nullable=True),
    Column("external_id", String(128), nullable=True),
    Column("attributes", JSON(), nullable=False, default=dict),
    Column("created_at", UTCDateTime(), nullable=False),
)

#: Bots, each with its package bucket ``<name>.gbai`` and its webhook. ``state``: 0 disabled,
#: 1 enabled, 2 no-setup (the Talk bots reference's constants).
bots = Table(
    "bots",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(36), ForeignKey("customers.id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("name", String(63), nullable=False, unique=True),
    Column("description", Text(), nullable=True),
    Column("url", String(2048), nullable=True),
    #: The webhook secret, encrypted like S3 secrets (``SecretBox``).
    Column("secret", String(256), nullable=False),
    Column("bucket", BucketName, nullable=True),
    Column("invite_code", String(32), nullable=True),
    Column("attributes", JSON(), nullable=False, default=dict),
    Column("state", Integer(), nullable=False, server_default="1"),
    Column("error_count", Integer(), nullable=False, server_default="0"),
    Column("last_error_date", UTCDateTime(), nullable=True),
    Column("last_error_message", Text(), nullable=True),
    #: Webhook delivery: every change up to this ``changes.seq`` has been delivered.
    Column("delivered_seq", BigInteger(), nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

bot_admins = Table(
    "bot_admins",
    metadata,
    Column("bot_id", String(36), ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True),
    Column("customer_id", String(36), ForeignKey("customers.id", ondelete="CASCADE"),
           primary_key=True, index=True),
)

#: A bot's chat recipients (the Control Tower reference's "users").
bot_users = Table(
    "bot_users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("bot_id", String(36), ForeignKey("bots.id", ondelete="CASCADE"), nullable=False),
    Column("customer_id", String(36), nullable=True),
    Column("external_id", String(128), nullable=True),
    Column("bot_status", String(16), nullable=False, server_default="active"),
    Column("attributes", JSON(), nullable=False, default=dict),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_bot_users_bot_status", "bot_id", "bot_status"),
)

#: Conversations (rooms) whose moderators enable bots in them (the Talk bots reference).
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("owner_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

conversation_members = Table(
    "conversation_members",
    metadata,
    Column("conversation_id", String(32), ForeignKey("conversations.id", ondelete="CASCADE"),
           primary_key=True),
    Column("user_id", BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True,
           index=True),
    #: ``owner``, ``moderator`` or ``user``
    Column("role", String(16), nullable=False),
)

conversation_bots = Table(
    "conversation_bots",
    metadata,
    Column("conversation_id", String(32), ForeignKey("conversations.id", ondelete="CASCADE"),
           primary_key=True),
    Column("bot_id", String(36), ForeignKey("bots.id", ondelete="CASCADE"), primary_key=True,
           index=True),
    Column("created_at", UTCDateTime(), nullable=False),
)
