"""create messages, their attachment ids and key/value objects, and api keys

Revision ID: 0001
Revises:
Create Date: 2026-11-26

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def utc_datetime():
    return sa.DateTime(timezone=True)


def flag(name: str) -> sa.Column:
    return sa.Column(name, sa.Boolean(), server_default=sa.false(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.String(24), nullable=False),
        sa.Column("event_time", utc_datetime(), nullable=False),
        sa.Column("communication_id", sa.Text()),
        sa.Column("msg_type", sa.Integer()),
        sa.Column("type", sa.Text()),
        sa.Column("user_id", sa.Text()),
        sa.Column("received_config_id", sa.Text()),
        sa.Column("module_id", sa.Integer()),
        sa.Column("ref_id", sa.Text()),
        sa.Column("ref_display_id", sa.Text()),
        flag("is_system_gen"),
        sa.Column("imap_config_id", sa.Text()),
        sa.Column("created_by", sa.Text()),
        sa.Column("organization", sa.Text()),
        sa.Column("creation_time", utc_datetime()),
        sa.Column("last_update_time", utc_datetime()),
        flag("is_deleted"),
        flag("is_assignee_read"),
        sa.Column("customer_id", sa.Text()),
        sa.Column("customer_entity_id", sa.Text()),
        flag("is_description"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.CheckConstraint("length(id) = 24", name=op.f("ck_messages_id_length")),
    )
    op.create_table(
        "message_attachments",
        sa.Column("message_id", sa.String(24), nullable=False),
        sa.Column("ordinal", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("attachment_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "ordinal", name=op.f("pk_message_attachments")),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], ondelete="CASCADE",
            name=op.f("fk_message_attachments_message_id_messages"),
        ),
    )
    op.create_table(
        "message_key_values",
        sa.Column("message_id", sa.String(24), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("ordinal", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("keys_text", sa.Text()),
        sa.Column("values_text", sa.Text()),
        flag("queryparam"),
        sa.PrimaryKeyConstraint(
            "message_id", "channel", "ordinal", name=op.f("pk_message_key_values")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], ondelete="CASCADE",
            name=op.f("fk_message_key_values_message_id_messages"),
        ),
        sa.CheckConstraint(
            "channel IN ('read_map', 'email', 'sms', 'api', 'beep')",
            name=op.f("ck_message_key_values_channel"),
        ),
        sa.CheckConstraint(
            "channel = 'read_map' OR ordinal = 0",
            name=op.f("ck_message_key_values_one_object_per_data_channel"),
        ),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("organization", sa.Text()),
        sa.Column("all_organizations", sa.Boolean(), nullable=False),
        sa.Column("key_digest", sa.String(64), nullable=False),
        sa.Column("key_prefix", sa.String(12), nullable=False),
        sa.Column("created_at", utc_datetime(), nullable=False),
        sa.Column("revoked_at", utc_datetime()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_digest", name=op.f("uq_api_keys_key_digest")),
        sa.CheckConstraint(
            "(organization IS NULL) = all_organizations",
            name=op.f("ck_api_keys_organization_or_all"),
        ),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("message_key_values")
    op.drop_table("message_attachments")
    op.drop_table("messages")
