"""Indexes for the object search (``GET /api/v1/storage/buckets/{bucket}/search``): one per
sortable column, each ending in the key that breaks ties, so a page is an index range scan
that starts at its cursor.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_INDEXES = {
    "ix_objects_search_size": ["bucket_id", "is_latest", "size", "key"],
    "ix_objects_search_modified": ["bucket_id", "is_latest", "last_modified", "key"],
    "ix_objects_search_type": ["bucket_id", "is_latest", "content_type", "key"],
}


def upgrade() -> None:
    for name, columns in _INDEXES.items():
        op.create_index(name, "objects", columns)


def downgrade() -> None:
    for name in _INDEXES:
        op.drop_index(name, table_name="objects")
