"""On PostgreSQL, bucket names compare in bytes (``COLLATE "C"``), as object keys already do.

ListBuckets is in byte order; PostgreSQL otherwise compares by the database's collation
(an ICU or ``en_US`` one ignores ``.`` and ``-`` at first), so ``a-c`` could come before
``a.b``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE buckets ALTER COLUMN name TYPE VARCHAR(63) COLLATE "C"')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE buckets ALTER COLUMN name TYPE VARCHAR(63) COLLATE "default"')
