"""salt api key digests, and find keys by their prefix

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

Keys made before this revision keep an empty salt, so their digests still match.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("key_salt", sa.String(32), nullable=False,
                                        server_default=""))
    op.create_index("ix_api_keys_key_prefix", "api_keys", ["key_prefix"])


def downgrade() -> None:
    # Salted digests can't be turned back: revoke the keys that have one.
    op.execute("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP "
               "WHERE key_salt <> '' AND revoked_at IS NULL")
    op.drop_index("ix_api_keys_key_prefix", "api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("key_salt")
