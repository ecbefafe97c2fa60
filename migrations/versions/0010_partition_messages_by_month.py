"""messages and its child tables partitioned by month of the message id (PostgreSQL)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

A message's id is a MongoDB ObjectId: its first 8 hex digits are the second it was made,
so ids sort by creation time and a month is a range of ids. `messages`,
`message_attachments` and `message_key_values` become tables PARTITIONED BY RANGE of the
(message) id, with the same bounds for all three, so that a month of messages goes with
its child rows by dropping three partitions (`flask retention`). The primary keys and
foreign keys stay as they were: each includes the partition key.

Each table gets:
- `<table>_yYYYYmMM`, one partition a month, made here from the current month to three
  months ahead, and kept ahead by `flask partitions` (messenger_app/partitions.py);
- `<table>_default`, the DEFAULT partition: an id of a month that has no partition yet
  (an import of years-old ObjectIds, a clock far ahead) lands there, and `flask partitions`
  moves such rows into partitions of their own months;
- `<table>_legacy`, only where the tables already held rows: the old table itself,
  attached whole as the partition of every id below the first month partitioned, under a
  CHECK that spares PostgreSQL the scan that would otherwise prove it.

The old tables are renamed, the partitioned ones made in their place (LIKE the old ones:
columns, defaults, CHECK constraints, column comments), and the old ones attached or, when
empty, dropped; the reporting views are made again on the new `messages`. One transaction:
what it locks, for how long at a million and a hundred million messages, and how to run
it on a live system are in docs/migrations.md ("0010").

An offline script (`--sql`) can't see whether the tables hold rows: it always keeps them
as the legacy partitions, below the month after the one it was written in.

Downgrade: plain tables again, with every row copied (slow on a large table).
SQLite: nothing changes (it has no partitioning).
"""
from collections.abc import Sequence
from datetime import UTC, datetime

from alembic import context, op
from sqlalchemy import text

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table: (partition key, primary key columns)
TABLES = {
    "messages": ("id", "id"),
    "message_attachments": ("message_id", "message_id, ordinal"),
    "message_key_values": ("message_id", "message_id, channel, ordinal"),
}
CHILDREN = ("message_attachments", "message_key_values")
# The indexes of messages, as 0002 and 0007 made them.
INDEXES = {
    "ix_messages_creation_time_id": "(creation_time DESC, id DESC)",
    "ix_messages_organization_creation_time_id": "(organization, creation_time DESC, id DESC)",
    "ix_messages_organization_id": "(organization, id)",
    "ix_messages_ref_id": "(ref_id)",
    "ix_messages_customer_id": "(customer_id)",
    "ix_messages_communication_id": "(communication_id)",
    "ix_messages_user_id": "(user_id)",
    "ix_messages_organization_creation_day":
        "(organization, ((creation_time AT TIME ZONE 'UTC')::date))",
    "ix_messages_unread": "(organization, user_id) INCLUDE (creation_time)"
                          " WHERE NOT is_assignee_read AND NOT is_deleted",
}
MONTHS_AHEAD = 3


def bound(year: int, month: int) -> str:
    """The lowest ObjectId of a month (UTC), its first second then zeros, as a partition
    bound; MAXVALUE past the last second an ObjectId can hold (in 2106)."""
    seconds = int(datetime(year, month, 1, tzinfo=UTC).timestamp())
    return f"'{seconds:08x}{'0' * 16}'" if seconds <= 0xFFFFFFFF else "MAXVALUE"


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def month_of(object_id: str) -> tuple[int, int]:
    made = datetime.fromtimestamp(int(object_id[:8], 16), UTC)
    return made.year, made.month


def quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    now = datetime.now(UTC)
    this_month = (now.year, now.month)
    offline = context.is_offline_mode()
    prepared = not offline and op.get_bind().scalar(text(
        "SELECT to_regclass('messages_partitioned') IS NOT NULL"))
    newest = None if offline or prepared else op.get_bind().scalar(text(
        "SELECT max(id) FROM messages"))
    legacy_end = next_month(*max(this_month, month_of(newest) if newest else this_month))
    end = prepared_bound() if prepared else bound(*legacy_end)
    if not prepared:
        for statement in preparation(end):
            op.execute(statement)
    drop_views()
    swap(end)
    empty = not (offline or prepared or newest)
    if empty:  # nothing to keep: no legacy partitions, months from this one
        for table in (*CHILDREN, "messages"):
            op.execute(f"ALTER TABLE {table} DETACH PARTITION {table}_legacy")
            op.execute(f"DROP TABLE {table}_legacy")
    for table in TABLES:
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        op.execute(f"COMMENT ON TABLE {table}_default IS 'Partition of {table}: ids of months"
                   " with no partition of their own yet (flask partitions moves them).'")
    month = this_month if empty else month_of(end.strip("'")) if end != "MAXVALUE" else None
    for _ in range(MONTHS_AHEAD + 1):
        if month is None or bound(*month) == "MAXVALUE":
            break
        for table in TABLES:
            create_month(table, month)
        month = next_month(*month)
    create_views()
    if not empty:  # autovacuum analyses the partitions, never their parents
        with op.get_context().autocommit_block():
            for table in TABLES:
                op.execute(f"ANALYZE {table}")


def unless_constraint(table: str, name: str, statement: str) -> str:
    return (f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid ="
            f" '{table}'::regclass AND conname = '{name}') THEN {statement}; END IF; END $$")


def preparation(end: str) -> list[str]:
    """What docs/migrations.md's online steps do beforehand, each statement on its own
    (their long scans take no lock that stops reads or writes); here, in the migration's
    transaction. CHECKs on the old tables that prove the legacy partitions' bound (so that
    attaching them scans nothing); the partitioned messages-to-be, with the old messages
    attached to it as its legacy partition; the children's foreign keys to it (so that
    attaching them validates nothing)."""
    statements = []
    for table, (key, _primary_key) in TABLES.items():
        if end != "MAXVALUE":
            check = f"ck_{table}_legacy_bound"
            statements += [unless_constraint(table, check, f"ALTER TABLE {table} ADD CONSTRAINT"
                                             f" {check} CHECK ({key} < {end}) NOT VALID"),
                           f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}"]
    statements += [
        "CREATE TABLE messages_partitioned (LIKE messages INCLUDING DEFAULTS INCLUDING"
        " CONSTRAINTS INCLUDING COMMENTS INCLUDING STORAGE) PARTITION BY RANGE (id)",
        "ALTER TABLE messages_partitioned DROP CONSTRAINT IF EXISTS ck_messages_legacy_bound",
        "ALTER TABLE messages_partitioned ADD CONSTRAINT pk_messages_partitioned PRIMARY KEY (id)",
        *(f"CREATE INDEX {partitioned_index(index)} ON messages_partitioned {definition}"
          for index, definition in INDEXES.items()),
        f"ALTER TABLE messages_partitioned ATTACH PARTITION messages"
        f" FOR VALUES FROM (MINVALUE) TO ({end})",
    ]
    for child in CHILDREN:
        foreign_key = f"fk_{child}_message_id_partitioned"
        statements += [unless_constraint(child, foreign_key, f"ALTER TABLE {child} ADD CONSTRAINT"
                                         f" {foreign_key} FOREIGN KEY (message_id) REFERENCES"
                                         " messages_partitioned (id) ON DELETE CASCADE NOT VALID"),
                       f"ALTER TABLE {child} VALIDATE CONSTRAINT {foreign_key}"]
    return statements


def partitioned_index(index: str) -> str:
    return index.replace("ix_messages_", "ix_messages_partitioned_")


def legacy_index(index: str) -> str:
    return index.replace("ix_messages_", "ix_messages_legacy_")


def prepared_bound() -> str:
    """The legacy partition's bound that the online steps chose."""
    partition_bound = op.get_bind().scalar(text(
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = 'messages'::regclass"))
    return partition_bound.removeprefix("FOR VALUES FROM (MINVALUE) TO (").removesuffix(")")


def swap(end: str) -> None:
    """The partitioned tables take the old ones' names (and their constraints' and
    indexes'); the old ones become their legacy partitions. Nothing is scanned."""
    comments = context.script.get_revision("0006").module.COMMENTS
    op.execute("ALTER TABLE messages RENAME TO messages_legacy")
    op.execute("ALTER TABLE messages_legacy RENAME CONSTRAINT pk_messages TO pk_messages_legacy")
    for index in INDEXES:
        op.execute(f"ALTER INDEX {index} RENAME TO {legacy_index(index)}")
    op.execute("ALTER TABLE messages_partitioned RENAME TO messages")
    op.execute("ALTER TABLE messages RENAME CONSTRAINT pk_messages_partitioned TO pk_messages")
    for index in INDEXES:
        op.execute(f"ALTER INDEX {partitioned_index(index)} RENAME TO {index}")
    for child in CHILDREN:
        op.execute(f"ALTER TABLE {child} RENAME TO {child}_legacy")
        op.execute(f"ALTER TABLE {child}_legacy RENAME CONSTRAINT pk_{child} TO pk_{child}_legacy")
        op.execute(f"ALTER TABLE {child}_legacy DROP CONSTRAINT fk_{child}_message_id_messages")
        op.execute(f"CREATE TABLE {child} (LIKE {child}_legacy INCLUDING DEFAULTS INCLUDING"
                   " CONSTRAINTS INCLUDING COMMENTS INCLUDING STORAGE)"
                   " PARTITION BY RANGE (message_id)")
        op.execute(f"ALTER TABLE {child} DROP CONSTRAINT IF EXISTS ck_{child}_legacy_bound")
        op.execute(f"ALTER TABLE {child} ADD CONSTRAINT pk_{child} PRIMARY KEY"
                   f" ({TABLES[child][1]})")
        op.execute(f"ALTER TABLE {child} ADD CONSTRAINT fk_{child}_message_id_messages"
                   " FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE")
        op.execute(f"ALTER TABLE {child} ATTACH PARTITION {child}_legacy"
                   f" FOR VALUES FROM (MINVALUE) TO ({end})")
    for table in TABLES:
        op.execute(f"COMMENT ON TABLE {table} IS {quoted(comments[table][0])}")
        op.execute(f"COMMENT ON TABLE {table}_legacy IS 'Partition of {table}: the ids below"
                   f" {end.strip(chr(39))}, as stored before migration 0010.'")


def create_month(table: str, month: tuple[int, int]) -> None:
    year, number = month
    name = f"{table}_y{year}m{number:02d}"
    op.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES"
               f" FROM ({bound(*month)}) TO ({bound(*next_month(*month))})")
    op.execute(f"COMMENT ON TABLE {name} IS 'Partition of {table}: ids made in"
               f" {year}-{number:02d} (UTC).'")


def drop_views() -> None:
    for view in reversed(context.script.get_revision("0007").module.COMMENTS):
        op.execute(f"DROP VIEW {view}")


def create_views() -> None:
    """As 0007 made them (and 0009 made message_report again), with their comments."""
    views = context.script.get_revision("0007").module
    op.execute(views.message_report("postgresql"))
    op.execute(views.message_daily_counts("postgresql"))
    op.execute(views.UNREAD_PER_ASSIGNEE)
    for view, (comment, columns) in views.COMMENTS.items():
        op.execute(f"COMMENT ON VIEW {view} IS {quoted(comment)}")
        for column, column_comment in columns.items():
            op.execute(f"COMMENT ON COLUMN {view}.{column} IS {quoted(column_comment)}")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    drop_views()
    for table in TABLES:
        op.execute(f"CREATE TABLE {table}_plain (LIKE {table} INCLUDING DEFAULTS INCLUDING"
                   " CONSTRAINTS INCLUDING COMMENTS INCLUDING STORAGE)")
        op.execute(f"INSERT INTO {table}_plain SELECT * FROM {table}")
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE {table}")  # with its partitions
    comments = context.script.get_revision("0006").module.COMMENTS
    for table, (_key, primary_key) in TABLES.items():
        op.execute(f"ALTER TABLE {table}_plain RENAME TO {table}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY ({primary_key})")
        op.execute(f"COMMENT ON TABLE {table} IS {quoted(comments[table][0])}")
    for index, definition in INDEXES.items():
        op.execute(f"CREATE INDEX {index} ON messages {definition}")
    for table in CHILDREN:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_message_id_messages"
                   " FOREIGN KEY (message_id) REFERENCES messages (id) ON DELETE CASCADE")
    create_views()
