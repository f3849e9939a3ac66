"""Leases for background jobs, so each runs on one instance at a time.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from gateway.metadata.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(32), nullable=False),
        sa.Column("lease_until", UTCDateTime(), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_run_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("job_leases")
