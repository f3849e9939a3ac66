"""The bot platform: the change log, upload rejections, bucket-scoped keys, customers, bots,
their admins and users, conversations.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from gateway.metadata.models import BigId, BucketName, KeyString, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_keys") as batch:
        batch.add_column(sa.Column("bucket_scope", sa.String(63), nullable=True))
    op.create_table(
        "changes",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("bucket_id", BigId, nullable=False),
        sa.Column("bucket", BucketName, nullable=False),
        sa.Column("key", KeyString, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("etag", sa.String(64), nullable=True),
        sa.Column("version_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_changes_bucket_seq", "changes", ["bucket", "seq"])
    op.create_index("ix_changes_created_at", "changes", ["created_at"])
    counter = op.create_table(
        "change_counter",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(counter, [{"id": 1, "value": 0}])
    op.create_table(
        "upload_rejections",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("bucket", BucketName, nullable=False),
        sa.Column("key", KeyString, nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("principal", sa.String(128), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_upload_rejections_created_at", "upload_rejections", ["created_at"])
    op.create_table(
        "customers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE",
                                                  name="fk_customers_user_id_users"),
                  nullable=False),
        sa.Column("name", sa.String(256), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("external_id", sa.String(128), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("user_id", name="uq_customers_user_id"),
    )
    op.create_table(
        "bots",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(36),
                  sa.ForeignKey("customers.id", ondelete="CASCADE",
                                name="fk_bots_customer_id_customers"), nullable=False),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("url", sa.String(2048), nullable=True),
        sa.Column("secret", sa.String(256), nullable=False),
        sa.Column("bucket", BucketName, nullable=True),
        sa.Column("invite_code", sa.String(32), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("error_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error_date", UTCDateTime(), nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("delivered_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_bots_name"),
    )
    op.create_index("ix_bots_customer_id", "bots", ["customer_id"])
    op.create_table(
        "bot_admins",
        sa.Column("bot_id", sa.String(36),
                  sa.ForeignKey("bots.id", ondelete="CASCADE", name="fk_bot_admins_bot_id_bots"),
                  primary_key=True),
        sa.Column("customer_id", sa.String(36),
                  sa.ForeignKey("customers.id", ondelete="CASCADE",
                                name="fk_bot_admins_customer_id_customers"), primary_key=True),
    )
    op.create_index("ix_bot_admins_customer_id", "bot_admins", ["customer_id"])
    op.create_table(
        "bot_users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("bot_id", sa.String(36),
                  sa.ForeignKey("bots.id", ondelete="CASCADE", name="fk_bot_users_bot_id_bots"),
                  nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=True),
        sa.Column("external_id", sa.String(128), nullable=True),
        sa.Column("bot_status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_bot_users_bot_status", "bot_users", ["bot_id", "bot_status"])
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("owner_id", BigId,
                  sa.ForeignKey("users.id", ondelete="CASCADE",
                                name="fk_conversations_owner_id_users"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "conversation_members",
        sa.Column("conversation_id", sa.String(32),
                  sa.ForeignKey("conversations.id", ondelete="CASCADE",
                                name="fk_conversation_members_conversation_id_conversations"),
                  primary_key=True),
        sa.Column("user_id", BigId,
                  sa.ForeignKey("users.id", ondelete="CASCADE",
                                name="fk_conversation_members_user_id_users"),
                  primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
    )
    op.create_index("ix_conversation_members_user_id", "conversation_members", ["user_id"])
    op.create_table(
        "conversation_bots",
        sa.Column("conversation_id", sa.String(32),
                  sa.ForeignKey("conversations.id", ondelete="CASCADE",
                                name="fk_conversation_bots_conversation_id_conversations"),
                  primary_key=True),
        sa.Column("bot_id", sa.String(36),
                  sa.ForeignKey("bots.id", ondelete="CASCADE",
                                name="fk_conversation_bots_bot_id_bots"), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_conversation_bots_bot_id", "conversation_bots", ["bot_id"])


def downgrade() -> None:
    for table in ("conversation_bots", "conversation_members", "conversations", "bot_users",
                  "bot_admins", "bots", "customers", "upload_rejections", "change_counter",
                  "changes"):
        op.drop_table(table)
    with op.batch_alter_table("access_keys") as batch:
        batch.drop_column("bucket_scope")
