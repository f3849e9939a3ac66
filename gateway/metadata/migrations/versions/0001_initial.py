"""Initial schema: users, access keys, buckets, objects (a row per version).

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from gateway.metadata.models import BigId, KeyString, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "access_keys",
        sa.Column("access_key", sa.String(128), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("secret", sa.String(256), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("access_key", name="pk_access_keys"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_access_keys_user_id_users"),
    )
    op.create_index("ix_access_keys_user_id", "access_keys", ["user_id"])
    op.create_table(
        "buckets",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("owner_id", BigId, nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_buckets"),
        sa.UniqueConstraint("name", name="uq_buckets_name"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_buckets_owner_id_users"),
    )
    op.create_index("ix_buckets_owner_id", "buckets", ["owner_id"])
    op.create_table(
        "objects",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("bucket_id", BigId, nullable=False),
        sa.Column("key", KeyString, nullable=False),
        sa.Column("version_id", sa.String(64), nullable=False),
        sa.Column("is_latest", sa.Boolean(), nullable=False),
        sa.Column("is_delete_marker", sa.Boolean(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("last_modified", UTCDateTime(), nullable=False),
        sa.Column("blob_key", sa.String(512), nullable=True),
        sa.Column("content_type", sa.String(1024), nullable=True),
        sa.Column("user_metadata", sa.JSON(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("checksum_algorithm", sa.String(16), nullable=True),
        sa.Column("checksum_value", sa.String(128), nullable=True),
        sa.Column("storage_class", sa.String(32), nullable=False),
        sa.Column("owner_id", BigId, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_objects"),
        sa.ForeignKeyConstraint(["bucket_id"], ["buckets.id"],
                                name="fk_objects_bucket_id_buckets"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_objects_owner_id_users"),
        sa.UniqueConstraint("bucket_id", "key", "version_id",
                            name="uq_objects_bucket_key_version"),
    )
    op.create_index("ix_objects_listing", "objects", ["bucket_id", "is_latest", "key"])
    op.create_index("ix_objects_blob_key", "objects", ["blob_key"])


def downgrade() -> None:
    op.drop_table("objects")
    op.drop_table("buckets")
    op.drop_table("access_keys")
    op.drop_table("users")
