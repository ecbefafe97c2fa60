"""Monthly partitions of `messages` and its child tables on PostgreSQL (migration 0010), and
retention. A message id is a MongoDB ObjectId, whose first 8 hex digits are the second it
was made: a month is the range of ids from its first second's. The three tables are
partitioned alike, `<table>_yYYYYmMM` a month, so that a month of messages goes with its
child rows by dropping three partitions, and each child partition's foreign key refers to
the messages partition of the same month (migration 0012). An id of a month with no
partition lands in `<table>_default`; `ensure_partitions` makes the months ahead of the
clock, and moves rows out of the default partition into partitions of their own months. A
database migrated with rows keeps them in `<table>_legacy`, the partition of every id
below its first month.

On SQLite nothing is partitioned, and retention is a DELETE."""
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import NamedTuple

from psycopg.errors import LockNotAvailable
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

# Each partitioned table and its partition key; the messages' partitions first.
PARTITIONED = {"messages": "id", "message_attachments": "message_id",
               "message_key_values": "message_id"}
CHILDREN = ("message_attachments", "message_key_values")
PARTITION_NAME = re.compile(rf"({'|'.join(PARTITIONED)})_(legacy|default|y\d{{4}}m\d{{2}})")
MONTHS_AHEAD = 3
# A partition is made or dropped under ACCESS EXCLUSIVE locks on the three tables, for a
# moment. Writes take the tables in different orders (a POST's statement locks
# message_key_values first, a DELETE messages first), so whatever the order of ours, a
# write may hold one that we wait for while waiting for one of ours: a deadlock. We give up
# waiting sooner than PostgreSQL's deadlock_timeout (1 s), so that we, not the write, are
# the one that gives way, and try again; the writes queued behind us wait that long at most.
LOCK_TIMEOUT = "200ms"
LOCK_ATTEMPTS = 50
DELETE_BATCH = 5000  # rows deleted per transaction in a partition that retention trims

BOUND = re.compile(r"FOR VALUES FROM \((MINVALUE|'([0-9a-f]+)')\) TO \((MAXVALUE|'([0-9a-f]+)')\)")


def is_partition(table: str) -> bool:
    return PARTITION_NAME.fullmatch(table) is not None


def include_name(name, type_, _parent_names) -> bool:
    """For Alembic's autogenerate: partitions are made by `ensure_partitions`, not by the
    models."""
    return not (type_ == "table" and is_partition(name))


def include_object_on(dialect: str):
    """For Alembic's autogenerate, comparing with a database of `dialect`: nor are the
    foreign keys that PostgreSQL keeps for each partition of a referred table; and on
    PostgreSQL the child tables' foreign keys to messages are their partitions' (migration
    0012, `create_month`), which the models' stand for."""
    def include_object(object_, _name, type_, _reflected, _compare_to) -> bool:
        if type_ != "foreign_key_constraint":
            return True
        referred = object_.referred_table.name
        per_partition = dialect == "postgresql" and object_.parent.name in CHILDREN
        return not (is_partition(referred) or per_partition and referred == "messages")
    return include_object


def first_id(day: date) -> str | None:
    """The lowest ObjectId made on or after `day` (00:00 UTC); None past the last second an
    ObjectId can hold (in 2106)."""
    seconds = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return f"{seconds:08x}" + "0" * 16 if seconds <= 0xFFFFFFFF else None


def as_bound(object_id: str | None) -> str:
    return "MAXVALUE" if object_id is None else f"'{object_id}'"


def next_month(month: date) -> date:
    return date(month.year + 1, 1, 1) if month.month == 12 else date(month.year, month.month + 1, 1)


class Partition(NamedTuple):
    """A partition of `messages`: its name's suffix (the same for the child tables') and its
    ids, from `lower` (None: the lowest) up to `upper` (None: no end); the default
    partition has neither."""
    suffix: str
    lower: str | None
    upper: str | None
    default: bool

    def overlaps(self, lower: str, upper: str | None) -> bool:
        return not self.default and (self.lower is None or upper is None or self.lower < upper
                                     ) and (self.upper is None or lower < self.upper)


class Busy(Exception):
    """The tables stayed locked by others through every attempt."""


@contextmanager
def exclusive(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the three tables to itself (ACCESS EXCLUSIVE) from its
    start, so that its own statements wait for no lock, each of them taken within
    LOCK_TIMEOUT or the transaction begun again, up to LOCK_ATTEMPTS times."""
    for attempt in range(LOCK_ATTEMPTS):
        connection = engine.connect()
        try:
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            connection.exec_driver_sql(f"LOCK TABLE {', '.join(PARTITIONED)}"
                                       " IN ACCESS EXCLUSIVE MODE")
        except OperationalError as error:
            connection.close()
            if not isinstance(error.orig, LockNotAvailable):
                raise
            time.sleep(random.uniform(0.05, 0.1 * (attempt + 1)))
            continue
        with connection:
            yield connection
            connection.commit()
        return
    raise Busy(f"{', '.join(PARTITIONED)} stayed in use by others; nothing was changed.")


def partitions(connection: Connection) -> list[Partition]:
    rows = connection.execute(text(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'messages'::regclass"
        " ORDER BY c.relname"))
    found = []
    for name, bound in rows:
        suffix = name.removeprefix("messages_")
        if bound == "DEFAULT":
            found.append(Partition(suffix, None, None, True))
            continue
        match = BOUND.fullmatch(bound)
        if match is None:
            raise RuntimeError(f"Partition {name} has a bound this code can't read: {bound}")
        found.append(Partition(suffix, match[2], match[4], False))
    return found


# --- Partitions ahead of time, and the default partition's rows moved out ---------------

# The UTC months of the ids in the default partition, whatever the session's time zone.
MONTHS_IN_DEFAULT = text(
    "SELECT DISTINCT date_trunc('month', to_timestamp(CAST(CAST('x' || lpad(left(id, 8), 16,"
    " '0') AS bit(64)) AS bigint)) AT TIME ZONE 'UTC')"
    " FROM messages_default")


def ensure_partitions(engine: Engine, today: date, ahead: int = MONTHS_AHEAD,
                      since: date | None = None) -> list[str]:
    """Make the partitions of this month and `ahead` more (and of each month from `since`,
    for an import of older messages), and of each month that has rows in the default
    partition (moving them there), unless a partition holds its ids already. One
    transaction a month. Returns the months made, as YYYY-MM."""
    with engine.connect() as connection:
        existing = partitions(connection)
        in_default = {row[0].date() for row in connection.execute(MONTHS_IN_DEFAULT)}
    last = today.replace(day=1)
    for _ in range(ahead):
        last = next_month(last)
    month, wanted = min(since or today, today).replace(day=1), set(in_default)
    while month <= last:
        wanted.add(month)
        month = next_month(month)
    made = []
    for month in sorted(wanted):
        lower, upper = first_id(month), first_id(next_month(month))
        if lower is None or any(partition.overlaps(lower, upper) for partition in existing):
            continue
        with exclusive(engine) as connection:
            create_month(connection, month, moving=month in in_default)
        made.append(f"{month:%Y-%m}")
    return made


def create_month(connection: Connection, month: date, moving: bool) -> None:
    """The month's partition of each table. Rows of the month in the default partitions
    are taken out first (PostgreSQL refuses a partition whose rows the default holds) and
    put back once the partitions are there, under the ACCESS EXCLUSIVE lock on messages
    that making a partition takes anyway: held while they move, so a month of many rows in
    the default partition stops reads and writes that long."""
    lower, upper = first_id(month), first_id(next_month(month))
    bounds = {"lower": lower, "upper": upper or "g"}  # "g": above every hex id
    if moving:  # no write may come between the copy and the delete (nor may a read miss)
        for table, key in PARTITIONED.items():
            connection.execute(text(
                f"CREATE TEMPORARY TABLE moving_{table} ON COMMIT DROP AS SELECT * FROM"
                f" {table}_default WHERE {key} >= :lower AND {key} < :upper"), bounds)
        connection.execute(text(  # its child rows go with it (ON DELETE CASCADE)
            "DELETE FROM messages_default WHERE id >= :lower AND id < :upper"), bounds)
    suffix = f"y{month:%Y}m{month:%m}"
    for table in PARTITIONED:
        connection.exec_driver_sql(
            f"CREATE TABLE {table}_{suffix} PARTITION OF {table}"
            f" FOR VALUES FROM ({as_bound(lower)}) TO ({as_bound(upper)})")
        connection.exec_driver_sql(
            f"COMMENT ON TABLE {table}_{suffix} IS 'Partition of {table}: ids made in"
            f" {month:%Y-%m} (UTC).'")
    for child in CHILDREN:
        connection.exec_driver_sql(child_key(child, suffix))
    if moving:
        for table in PARTITIONED:
            connection.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM moving_{table}")


def child_key(child: str, suffix: str) -> str:
    """The foreign key of a child table's partition to the messages partition of the same
    ids (migration 0012: PostgreSQL checks it with one index probe, where a key to the
    partitioned messages locks each of its partitions for every row checked)."""
    return (f"ALTER TABLE {child}_{suffix} ADD CONSTRAINT"
            f" fk_{child}_{suffix}_message_id_messages_{suffix} FOREIGN KEY (message_id)"
            f" REFERENCES messages_{suffix} (id) ON DELETE CASCADE")


# --- Retention --------------------------------------------------------------------------

class Removal(NamedTuple):
    """What retention does (or would do) to one partition: drop it whole, or delete its
    messages below the cut."""
    partition: str
    dropped: bool
    messages: int


def plan_removal(connection: Connection, cut: str) -> list[Removal]:
    """What removing every message whose id is below `cut` takes, partition by partition:
    those wholly below it are dropped, those it crosses (and the default) trimmed."""
    removals = []
    for partition in partitions(connection):
        name = f"messages_{partition.suffix}"
        whole = partition.upper is not None and partition.upper <= cut
        if whole:
            count = connection.scalar(text(f"SELECT count(*) FROM {name}"))
        elif partition.default or partition.lower is None or partition.lower < cut:
            count = connection.scalar(text(f"SELECT count(*) FROM {name} WHERE id < :cut"),
                                      {"cut": cut})
        else:
            continue
        if whole or count:
            removals.append(Removal(name, whole, count))
    return removals


def remove_before(engine: Engine, before: date, dry_run: bool) -> Iterator[Removal]:
    """Remove every message made before `before` (00:00 UTC) with its child rows, yielding
    each removal as it is done (or, with `dry_run`, as it would be)."""
    cut = first_id(before)
    assert cut is not None, "a day before 2106"
    if engine.dialect.name != "postgresql":
        yield from delete_below(engine, "messages", cut, dry_run)
        return
    with engine.connect() as connection:
        removals = plan_removal(connection, cut)
    for removal in removals:
        if dry_run:
            yield removal
        elif removal.dropped:
            drop_partition(engine, removal.partition.removeprefix("messages_"))
            yield removal
        else:
            yield from delete_below(engine, removal.partition, cut, dry_run)


def drop_partition(engine: Engine, suffix: str) -> None:
    """The children's partitions go first, so that detaching the messages' one finds no
    row referring to it."""
    with exclusive(engine) as connection:
        for table in (*CHILDREN, "messages"):
            connection.exec_driver_sql(f"ALTER TABLE {table} DETACH PARTITION {table}_{suffix}")
            connection.exec_driver_sql(f"DROP TABLE {table}_{suffix}")


def delete_below(engine: Engine, table: str, cut: str, dry_run: bool) -> Iterator[Removal]:
    """DELETE the messages of `table` below `cut` (their child rows cascade), a batch a
    transaction, so that no transaction holds many row locks or runs long."""
    with engine.connect() as connection:
        if dry_run:
            count = connection.scalar(text(f"SELECT count(*) FROM {table} WHERE id < :cut"),
                                      {"cut": cut})
            if count:
                yield Removal(table, False, count)
            return
        deleted, batch = 0, DELETE_BATCH
        while batch == DELETE_BATCH:
            batch = connection.execute(text(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE id < :cut"
                " LIMIT :batch)"), {"cut": cut, "batch": DELETE_BATCH}).rowcount
            connection.commit()
            deleted += batch
        if deleted:
            yield Removal(table, False, deleted)
