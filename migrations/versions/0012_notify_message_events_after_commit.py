"""message events: NOTIFY after the write's commit, not in it

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

Drops 0011's statement trigger `message_events_written`. Its NOTIFY ran in each writing
transaction, and a NOTIFY takes, at commit, a server-wide lock held until the commit is
flushed: concurrent writes waited for one another's flushes. The service's processes now
send the NOTIFY themselves just after a write commits (live.Notifier). Rows written into
message_events by hand wake no feed at once: the feeds find them within their periodic
check (live.Feed.CHECK_SECONDS). Takes message_events' lock for an instant, no other.
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER message_events_written ON message_events")
    op.execute("DROP FUNCTION notify_message_events()")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION notify_message_events() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify('message_events', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER message_events_written AFTER INSERT ON message_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION notify_message_events()"
    )
