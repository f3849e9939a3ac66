"""Multipart uploads, their parts, and the part layout of completed objects.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from gateway.metadata.models import BigId, KeyString, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("objects", sa.Column("parts_count", sa.Integer(), nullable=True))
    op.create_table(
        "object_parts",
        sa.Column("object_id", BigId, nullable=False),
        sa.Column("part_number", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("checksum_value", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("object_id", "part_number", name="pk_object_parts"),
        sa.ForeignKeyConstraint(["object_id"], ["objects.id"], ondelete="CASCADE",
                                name="fk_object_parts_object_id_objects"),
    )
    op.create_table(
        "multipart_uploads",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("bucket_id", BigId, nullable=False),
        sa.Column("key", KeyString, nullable=False),
        sa.Column("blob_key", sa.String(512), nullable=False),
        sa.Column("backend_upload_id", sa.String(256), nullable=False),
        sa.Column("owner_id", BigId, nullable=False),
        sa.Column("initiated_at", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("content_type", sa.String(1024), nullable=True),
        sa.Column("user_metadata", sa.JSON(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("storage_class", sa.String(32), nullable=False),
        sa.Column("checksum_algorithm", sa.String(16), nullable=True),
        sa.Column("checksum_type", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_multipart_uploads"),
        sa.ForeignKeyConstraint(["bucket_id"], ["buckets.id"],
                                name="fk_multipart_uploads_bucket_id_buckets"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"],
                                name="fk_multipart_uploads_owner_id_users"),
    )
    op.create_index("ix_multipart_uploads_listing", "multipart_uploads",
                    ["bucket_id", "key", "initiated_at"])
    op.create_index("ix_multipart_uploads_initiated", "multipart_uploads", ["initiated_at"])
    op.create_index("ix_multipart_uploads_blob_key", "multipart_uploads", ["blob_key"])
    op.create_table(
        "multipart_parts",
        sa.Column("upload_id", sa.String(64), nullable=False),
        sa.Column("part_number", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(64), nullable=False),
        sa.Column("checksum_value", sa.String(128), nullable=True),
        sa.Column("token", sa.String(128), nullable=False),
        sa.Column("last_modified", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "part_number", name="pk_multipart_parts"),
        sa.ForeignKeyConstraint(["upload_id"], ["multipart_uploads.id"], ondelete="CASCADE",
                                name="fk_multipart_parts_upload_id_multipart_uploads"),
    )


def downgrade() -> None:
    op.drop_table("multipart_parts")
    op.drop_table("multipart_uploads")
    op.drop_table("object_parts")
    with op.batch_alter_table("objects") as batch:
        batch.drop_column("parts_count")
