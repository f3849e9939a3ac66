"""Versioning, tagging, lifecycle rules and encryption at rest.

Buckets get their versioning state (NULL until versioning is first configured, then
``Enabled`` or ``Suspended``), tags, lifecycle rules and default encryption; objects and
multipart uploads their tags and encryption parameters; an object version its moment of
becoming noncurrent (lifecycle's NoncurrentDays count from it). Versions of a key are
ordered by row id (inserted under the bucket's lock, so in commit order).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from gateway.metadata.models import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("buckets") as batch:
        batch.add_column(sa.Column("versioning", sa.String(16), nullable=True))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("lifecycle", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("encryption", sa.JSON(), nullable=True))
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("encryption", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("noncurrent_since", UTCDateTime(), nullable=True))
    with op.batch_alter_table("multipart_uploads") as batch:
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("encryption", sa.JSON(), nullable=True))
    op.create_index("ix_objects_versions", "objects", ["bucket_id", "key", "id"])
    op.create_index("ix_objects_noncurrent", "objects", ["is_latest", "noncurrent_since"])


def downgrade() -> None:
    op.drop_index("ix_objects_noncurrent", table_name="objects")
    op.drop_index("ix_objects_versions", table_name="objects")
    with op.batch_alter_table("multipart_uploads") as batch:
        batch.drop_column("encryption")
        batch.drop_column("tags")
    with op.batch_alter_table("objects") as batch:
        batch.drop_column("noncurrent_since")
        batch.drop_column("encryption")
        batch.drop_column("tags")
    with op.batch_alter_table("buckets") as batch:
        batch.drop_column("encryption")
        batch.drop_column("lifecycle")
        batch.drop_column("tags")
        batch.drop_column("versioning")
