"""idempotency keys: the stored responses of writes sent with an Idempotency-Key

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27

A new, empty table (nothing to backfill, no lock on existing tables). Comments are given
with the columns: PostgreSQL stores them, SQLite ignores them.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.Text(), nullable=False,
                  comment="Whose key it is: org:<organization> for an organization's API keys, "
                          "key:<api_keys.id> for an all-organizations key."),
        sa.Column("idempotency_key", sa.String(255), nullable=False,
                  comment='The Idempotency-Key header, as the client sent it.'),
        sa.Column("request_method", sa.String(8), nullable=False,
                  comment='The HTTP method of the first request with the key.'),
        sa.Column("request_path", sa.Text(), nullable=False,
                  comment='The URL path of the first request with the key.'),
        sa.Column("body_digest", sa.String(64), nullable=False,
                  comment="SHA-256 (hex) of the first request's body as canonical JSON "
                          "(sorted keys)."),
        sa.Column("state", sa.String(9), nullable=False,
                  comment='in_flight while the first request runs; done once answered.'),
        sa.Column("response_status", sa.Integer(),
                  comment='The stored response: its HTTP status (null while in flight).'),
        sa.Column("response_headers", sa.Text(),
                  comment='The stored response: Content-Type, Location and ETag, as a JSON '
                          'object.'),
        sa.Column("response_body", sa.LargeBinary(),
                  comment='The stored response: its body, byte for byte.'),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  comment='When the key was claimed (UTC); identifies the claim.'),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False,
                  comment='When the key may be used afresh and the row deleted (UTC).'),
        sa.PrimaryKeyConstraint("scope", "idempotency_key", name=op.f("pk_idempotency_keys")),
        sa.CheckConstraint("state IN ('in_flight', 'done')",
                           name=op.f("ck_idempotency_keys_state")),
        comment='Idempotency-Key headers of writes and their stored responses, so that a '
                'retried request is answered again instead of being applied twice; rows '
                'expire.',
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expires_at", "idempotency_keys")
    op.drop_table("idempotency_keys")
