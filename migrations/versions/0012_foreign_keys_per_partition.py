"""the child tables' foreign keys, a partition each (PostgreSQL)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

Since 0010 each child table's foreign key referred to the partitioned `messages`.
PostgreSQL 15 checks such a key with a query on the partitioned table whose plan locks
every partition of `messages` before it prunes to the one that holds the id: each child
row inserted (a POST inserts nine) paid that, and paid more with each month kept (half of
the database's time of a POST with five partitions a table). The three tables have the
same monthly bounds, so a child row's message is always in the partition of messages of
the same month: each child partition now refers to that one
(`fk_message_attachments_y2026m12_message_id_messages_y2026m12`), a plain table, and the
check is one index probe. The same rows are checked as before, and ON DELETE CASCADE
deletes the same rows. `flask partitions` gives each month it makes its keys
(partitions.create_month).

The partitions' keys are added NOT VALID (no scan) and the parents' keys dropped in the
migration's transaction, which first locks the three tables (a moment, once the writes
under way have ended); the new keys are then validated in a transaction after it, which
reads the child partitions under locks that let reads and writes go on (new rows were
checked from the first step). Rerun after an interruption, it adds what is missing and
validates what is not yet.

Downgrade: the parents' keys again (PostgreSQL validates a partitioned table's key as it
adds it: a read of the child tables under a lock that stops writes to them), and the
partitions' dropped.
SQLite: nothing changes (no partitions: the tables keep their keys).
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHILDREN = ("message_attachments", "message_key_values")

# For each partition of messages (its name's suffix: y2026m12, default, legacy) and each
# child table: the child's partition, the key's name, the messages partition. (No format()
# with %I: an offline script (--sql) would double its percent signs.)
EACH_PAIR = """
DO $$
DECLARE
    suffix text;
    child text;
    child_partition text;
    key text;
    messages_partition text;
BEGIN
    FOR suffix IN SELECT substr(c.relname, length('messages_') + 1) FROM pg_inherits i
                  JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'messages'::regclass
    LOOP
        FOREACH child IN ARRAY ARRAY['message_attachments', 'message_key_values'] LOOP
            child_partition := child || '_' || suffix;
            messages_partition := 'messages_' || suffix;
            key := 'fk_' || child_partition || '_message_id_' || messages_partition;
            %s
        END LOOP;
    END LOOP;
END $$"""

ADD_MISSING = """
IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = key
               AND conrelid = child_partition::regclass) THEN
    EXECUTE 'ALTER TABLE ' || quote_ident(child_partition) || ' ADD CONSTRAINT '
            || quote_ident(key) || ' FOREIGN KEY (message_id) REFERENCES '
            || quote_ident(messages_partition) || ' (id) ON DELETE CASCADE NOT VALID';
END IF;"""

VALIDATE = """
IF EXISTS (SELECT FROM pg_constraint WHERE conname = key
           AND conrelid = child_partition::regclass AND NOT convalidated) THEN
    EXECUTE 'ALTER TABLE ' || quote_ident(child_partition) || ' VALIDATE CONSTRAINT '
            || quote_ident(key);
END IF;"""

# Dropping a key locks both of its tables (ACCESS EXCLUSIVE); adding one, both (SHARE ROW
# EXCLUSIVE). Taken at once, first, so that the migration only waits for the writes under
# way, and they for it: taken one by one, a write that holds one of them and asks for
# another deadlocks with it (measured at 1,000,000 messages with a writer running: the
# writer's UPDATE was the one PostgreSQL aborted).
LOCK_ALL = "LOCK TABLE messages, message_attachments, message_key_values IN ACCESS EXCLUSIVE MODE"

DROP = ("EXECUTE 'ALTER TABLE ' || quote_ident(child_partition) || ' DROP CONSTRAINT IF EXISTS '"
        " || quote_ident(key);")


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(LOCK_ALL)
    op.execute(EACH_PAIR % ADD_MISSING)
    for child in CHILDREN:
        op.execute(f"ALTER TABLE {child} DROP CONSTRAINT IF EXISTS fk_{child}_message_id_messages")
    with op.get_context().autocommit_block():
        op.execute(EACH_PAIR % VALIDATE)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(LOCK_ALL)
    for child in CHILDREN:
        op.execute(f"ALTER TABLE {child} ADD CONSTRAINT fk_{child}_message_id_messages"
                   " FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE")
    op.execute(EACH_PAIR % DROP)
