"""add messages.row_version, the optimistic-concurrency version behind ETags

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Adding a NOT NULL column with a constant default rewrites no rows on PostgreSQL 11+.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("row_version", sa.Integer(), nullable=False,
                                        server_default=sa.text("1")))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("row_version")
