"""add the indexes that lists use

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

On PostgreSQL the indexes are built CONCURRENTLY, outside a transaction, so that a large,
live messages table keeps taking writes while they are built.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_messages_creation_time_id": ["creation_time DESC", "id DESC"],
    "ix_messages_organization_creation_time_id": ["organization", "creation_time DESC", "id DESC"],
    "ix_messages_organization_id": ["organization", "id"],
    "ix_messages_ref_id": ["ref_id"],
    "ix_messages_customer_id": ["customer_id"],
    "ix_messages_communication_id": ["communication_id"],
    "ix_messages_user_id": ["user_id"],
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, columns in INDEXES.items():
            op.create_index(name, "messages", [sa.text(c) for c in columns],
                            postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in reversed(INDEXES):
            op.drop_index(name, "messages", postgresql_concurrently=True, if_exists=True)
