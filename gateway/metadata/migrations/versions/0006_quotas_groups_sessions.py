"""Quotas and reservations, instances, groups and bucket grants, passwords and sessions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from gateway.metadata.models import BigId, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BUCKET_COLUMNS = ("quota_bytes", "quota_objects", "max_object_size")
_COUNTERS = ("used_bytes", "used_objects", "reserved_bytes", "reserved_objects")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(256), nullable=True))
    with op.batch_alter_table("buckets") as batch:
        for name in _BUCKET_COLUMNS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
        for name in _COUNTERS:
            batch.add_column(sa.Column(name, sa.BigInteger(), nullable=False,
                                       server_default="0"))
    # Usage of what is already stored: live objects plus uploaded multipart parts.
    op.execute("""
        UPDATE buckets SET
          used_objects = (SELECT COUNT(*) FROM objects o
                          WHERE o.bucket_id = buckets.id AND o.is_delete_marker = false),
          used_bytes = (SELECT COALESCE(SUM(o.size), 0) FROM objects o
                        WHERE o.bucket_id = buckets.id AND o.is_delete_marker = false)
                     + (SELECT COALESCE(SUM(p.size), 0) FROM multipart_parts p
                        JOIN multipart_uploads u ON u.id = p.upload_id
                        WHERE u.bucket_id = buckets.id)
    """)
    op.create_table(
        "instances",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
    )
    op.create_table(
        "quota_reservations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("bucket_id", BigId, nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("objects", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quota_reservations"),
        sa.ForeignKeyConstraint(["bucket_id"], ["buckets.id"], ondelete="CASCADE",
                                name="fk_quota_reservations_bucket_id_buckets"),
    )
    op.create_index("ix_quota_reservations_bucket_id", "quota_reservations", ["bucket_id"])
    op.create_index("ix_quota_reservations_instance_id", "quota_reservations", ["instance_id"])
    op.create_table(
        "groups",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_groups"),
        sa.UniqueConstraint("name", name="uq_groups_name"),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", BigId, nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.PrimaryKeyConstraint("group_id", "user_id", name="pk_group_members"),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE",
                                name="fk_group_members_group_id_groups"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_group_members_user_id_users"),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"])
    op.create_table(
        "bucket_grants",
        sa.Column("bucket_id", BigId, nullable=False),
        sa.Column("grantee_type", sa.String(8), nullable=False),
        sa.Column("grantee_id", BigId, nullable=False),
        sa.Column("permission", sa.String(8), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("bucket_id", "grantee_type", "grantee_id",
                                name="pk_bucket_grants"),
        sa.ForeignKeyConstraint(["bucket_id"], ["buckets.id"], ondelete="CASCADE",
                                name="fk_bucket_grants_bucket_id_buckets"),
    )
    op.create_index("ix_bucket_grants_grantee", "bucket_grants", ["grantee_type", "grantee_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_sessions_user_id_users"),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])


def downgrade() -> None:
    for table in ("sessions", "bucket_grants", "group_members", "groups",
                  "quota_reservations", "instances"):
        op.drop_table(table)
    with op.batch_alter_table("buckets") as batch:
        for name in _COUNTERS + _BUCKET_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_hash")
