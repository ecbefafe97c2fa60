"""message events: the outbox of the live-updates feed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

A new, empty table (nothing to backfill, no lock on existing tables), written in the same
transaction as each change to a message. On PostgreSQL the service NOTIFYs
`message_events` just after each write commits (live.Notifier: a NOTIFY in the write's
transaction, as a trigger would send it, would make concurrent commits wait for one
another's flushes), which wakes each service process's listener; SQLite has no NOTIFY: its
processes poll.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "message_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), sa.Identity(),
                  nullable=False,
                  comment="Order within a transaction (a sequence: assigned at insert, not "
                          "at commit)."),
        sa.Column("xid", sa.BigInteger(), nullable=False,
                  comment="PostgreSQL: the writing transaction's id (pg_current_xact_id()); "
                          "readers take only events of transactions below every running one, "
                          "so that a later commit can never sort before an event already "
                          "read. SQLite: 0."),
        sa.Column("kind", sa.String(7), nullable=False,
                  comment="created, updated or deleted."),
        sa.Column("message_id", sa.String(24), nullable=False,
                  comment="The message (messages.id)."),
        sa.Column("organization", sa.Text(),
                  comment="The message's organization after the change (deleted: before it)."),
        sa.Column("previous_organization", sa.Text(),
                  comment="The message's organization before the change (created: as "
                          "organization); differs when an update moved it to another "
                          "organization."),
        sa.Column("message", sa.Text(),
                  comment="The message after the change, as message_json renders it (one "
                          "JSON array); null for deleted."),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("CURRENT_TIMESTAMP"),
                  comment="When the event was written (UTC); purged EVENTS_RETENTION_DAYS "
                          "later."),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_message_events")),
        sa.CheckConstraint("kind IN ('created', 'updated', 'deleted')",
                           name=op.f("ck_message_events_kind")),
        comment="Changes to messages, for the live-updates feed "
                "(/ux/common/messenger/sms/events/); kept EVENTS_RETENTION_DAYS.",
        sqlite_autoincrement=True,
    )
    op.create_index("ix_message_events_xid_seq", "message_events", ["xid", "seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_message_events_xid_seq", "message_events")
    op.drop_table("message_events")
