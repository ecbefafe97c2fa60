"""msg_type and module_id become BIGINT: 64-bit integers, as MongoDB stored them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

PostgreSQL rewrites `messages` (and rebuilds its indexes) under an ACCESS EXCLUSIVE lock,
in one ALTER TABLE for both columns, so one rewrite: no read or write of messages waits
less than that (docs/migrations.md has the figures, and the way to do it online on a large
table). The view message_report names both columns, so it is dropped first and made again
after, as 0007 made it, in the same transaction. SQLite rebuilds the table (batch mode);
its integers were 64-bit already.

The rewritten table has no visibility map and no statistics for the two columns, so
index-only scans (the lists' counts, their pages' ids) would read the heap again until
autovacuum comes round: a VACUUM ANALYZE follows, outside the transaction (it takes no
lock that stops reads or writes). Not of an empty table (a new database): its statistics
would then say "no rows" where autovacuum is off, and plans made as it fills (the foreign
key checks', prepared statements') would scan it whole for good.

Downgrade: back to INTEGER, which fails if any stored value needs more than 32 bits.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("msg_type", "module_id")


def upgrade() -> None:
    change_type(sa.BigInteger(), "bigint")


def downgrade() -> None:
    change_type(sa.Integer(), "integer")


def change_type(type_: sa.types.TypeEngine, postgresql_type: str) -> None:
    if op.get_context().dialect.name != "postgresql":
        with op.batch_alter_table("messages") as batch:
            for column in COLUMNS:
                batch.alter_column(column, type_=type_)
        return
    reporting_views = context.script.get_revision("0007").module
    op.execute("DROP VIEW message_report")
    op.execute("ALTER TABLE messages " + ", ".join(
        f"ALTER COLUMN {column} TYPE {postgresql_type}" for column in COLUMNS))
    op.execute(reporting_views.message_report("postgresql"))
    comment, columns = reporting_views.COMMENTS["message_report"]
    op.execute(f"COMMENT ON VIEW message_report IS {reporting_views.quoted(comment)}")
    for column, column_comment in columns.items():
        op.execute(f"COMMENT ON COLUMN message_report.{column} IS "
                   f"{reporting_views.quoted(column_comment)}")
    if context.is_offline_mode() or op.get_bind().scalar(
            sa.text("SELECT EXISTS (SELECT FROM messages)")):
        with op.get_context().autocommit_block():
            op.execute("VACUUM ANALYZE messages")
