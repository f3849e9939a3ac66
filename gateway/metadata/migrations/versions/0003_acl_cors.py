"""Canned ACLs on buckets, objects and uploads; CORS rules on buckets.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_PRIVATE = sa.text("'private'")


def upgrade() -> None:
    with op.batch_alter_table("buckets") as batch:
        batch.add_column(sa.Column("acl", sa.String(32), nullable=False,
                                   server_default=_PRIVATE))
        batch.add_column(sa.Column("cors", sa.JSON(), nullable=True))
    with op.batch_alter_table("objects") as batch:
        batch.add_column(sa.Column("acl", sa.String(32), nullable=False,
                                   server_default=_PRIVATE))
    with op.batch_alter_table("multipart_uploads") as batch:
        batch.add_column(sa.Column("acl", sa.String(32), nullable=False,
                                   server_default=_PRIVATE))


def downgrade() -> None:
    for table, columns in (("multipart_uploads", ["acl"]), ("objects", ["acl"]),
                           ("buckets", ["cors", "acl"])):
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column)
