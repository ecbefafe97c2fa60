"""The live-updates feed's outbox, `message_events`: what each write adds to its own
statement or transaction (queries.py), and what the feed reads (live.py).

A position is (xid, seq). On PostgreSQL `seq` comes from a sequence when the row is
inserted, not when it commits, so two writers can commit in the other order than their
`seq`s: a reader that took the later one first and moved past it would never see the
earlier. Each event therefore also holds its transaction's id, and a reader takes only the
events of transactions below the lowest one of this database still running (HORIZON): every
transaction below it has ended, so no event that becomes visible later can sort before one
already read. The feed is read in (xid, seq) order, which is then a commit-consistent order. A
transaction that stays open holds back the events of those that began writing after it
(the feed waits; it never reorders). On SQLite one writer holds the lock from its first
write to its commit, so `seq` (the rowid) is commit order, and every xid is 0.

Nothing here commits."""
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Insert,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    tuple_,
)

from .message_json import MessageJSON
from .models import message_events as events
from .models import messages

Position = tuple[int, int]  # (xid, seq)
ORIGIN: Position = (0, 0)  # before every event
COLUMNS = ("xid", "kind", "message_id", "organization", "previous_organization", "message")


TRANSACTION_ID = {"postgresql": "CAST(CAST(pg_current_xact_id() AS text) AS bigint)",
                  "sqlite": "0"}


def transaction_id(dialect: str) -> ColumnElement:
    return literal_column(TRANSACTION_ID[dialect])


# PostgreSQL: the lowest transaction id that may still write events. Transaction ids are
# the server's, so pg_snapshot_xmin() would wait for every transaction of every database
# (a bulk load in another database held a test's feed back for its 15 minutes): in-progress
# ids known to be another database's (pg_stat_activity, read after the snapshot, shows
# datid and backend_xid to any role) don't count; an id that can't be placed (its backend
# ended meanwhile, a prepared transaction) does. None in progress: the snapshot's xmax.
HORIZON = (
    "(SELECT CAST(CAST(COALESCE("
    "(SELECT min(x) FROM pg_snapshot_xip(s.snap) AS x WHERE NOT EXISTS ("
    "SELECT FROM pg_stat_activity AS a WHERE a.datname <> current_database()"
    " AND CAST(CAST(a.backend_xid AS text) AS bigint) = CAST(CAST(x AS text) AS bigint)"
    " % 4294967296)), pg_snapshot_xmax(s.snap)) AS text) AS bigint)"
    " FROM (SELECT pg_current_snapshot() AS snap) AS s)")


def settled(dialect: str) -> ColumnElement[bool]:
    """Whether an event's transaction is below every transaction of this database still
    running (every one that may yet commit events)."""
    if dialect == "postgresql":
        return events.c.xid < literal_column(HORIZON)
    return true()


# --- Writes -----------------------------------------------------------------------------

def insert_from(dialect: str, rows, kind: str) -> Insert:
    """INSERT an event of `kind` for each row of `rows` (a CTE or subquery with `id`,
    `organization`, `previous_organization` and, unless deleted, `message`)."""
    message = null() if kind == "deleted" else rows.c.message
    return insert(events).from_select(COLUMNS, select(
        transaction_id(dialect), literal(kind), rows.c.id, rows.c.organization,
        rows.c.previous_organization, message))


def inserted_sql(dialect: str) -> str:
    """SQL text for a CTE `m` (the message just inserted: `id`, `organization`) whose
    event's message is the :event_message parameter (message_json.stored_json)."""
    return ("INSERT INTO message_events ({columns}) SELECT {xid}, 'created', m.id,"
            " m.organization, m.organization, :event_message FROM m").format(
        columns=", ".join(COLUMNS), xid=TRANSACTION_ID[dialect])


@cache
def snapshot_statement(dialect: str):
    """SQLite: INSERT the event of the message :message_id as it is now (after every
    statement of its write), of kind :kind, moved from :previous_organization."""
    now = select(messages.c.id, messages.c.organization,
                 bindparam("previous_organization").label("previous_organization"),
                 MessageJSON(messages).label("message")
                 ).where(messages.c.id == bindparam("message_id")).subquery("now")
    return insert(events).from_select(COLUMNS, select(
        transaction_id(dialect), bindparam("kind"), now.c.id, now.c.organization,
        now.c.previous_organization, now.c.message))


def record(connection: Connection, kind: str, message_id: str, organization: str | None,
           previous_organization: str | None, message: str | None = None) -> None:
    """INSERT one event from values, in the transaction of `connection`."""
    connection.execute(insert(events).values(xid=transaction_id(connection.dialect.name)), {
        "kind": kind, "message_id": message_id, "organization": organization,
        "previous_organization": previous_organization, "message": message})


# --- Reads ------------------------------------------------------------------------------

class Event(NamedTuple):
    position: Position
    kind: str
    message_id: str
    organization: str | None
    previous_organization: str | None
    message: str | None  # MessageJSON text; None for deleted


@cache
def after_statement(dialect: str, scoped: bool):
    statement = select(events.c.xid, events.c.seq, events.c.kind, events.c.message_id,
                       events.c.organization, events.c.previous_organization,
                       events.c.message, settled(dialect).label("settled"))
    statement = statement.where(tuple_(events.c.xid, events.c.seq) >
                                tuple_(bindparam("xid"), bindparam("seq")))
    if scoped:
        statement = statement.where(or_(events.c.organization == bindparam("scope"),
                                        events.c.previous_organization == bindparam("scope")))
    return statement.order_by(events.c.xid, events.c.seq).limit(bindparam("limit"))


def read_after(connection: Connection, after: Position, scope: str | None,
               limit: int) -> tuple[list[Event], bool]:
    """The settled events after `after` (at most `limit`, of `scope`'s messages; None: all),
    in order, and whether later ones are held back by a transaction still running."""
    statement = after_statement(connection.dialect.name, scope is not None)
    rows = connection.execute(statement, {"xid": after[0], "seq": after[1], "scope": scope,
                                          "limit": limit}).all()
    found = [event(row) for row in rows if row.settled]
    return found, len(found) < len(rows)


def event(row: Sequence) -> Event:
    return Event((row[0], row[1]), *row[2:7])


@cache
def edge_statement(dialect: str, newest: bool):
    order = [events.c.xid.desc(), events.c.seq.desc()] if newest else [events.c.xid,
                                                                       events.c.seq]
    statement = select(events.c.xid, events.c.seq).order_by(*order).limit(1)
    return statement.where(settled(dialect)) if newest else statement


def newest(connection: Connection) -> Position:
    """The newest settled event's position (ORIGIN if none): the present."""
    row = connection.execute(edge_statement(connection.dialect.name, True)).first()
    return ORIGIN if row is None else (row[0], row[1])


def oldest(connection: Connection) -> Position | None:
    """The oldest event kept; None if there is none."""
    row = connection.execute(edge_statement(connection.dialect.name, False)).first()
    return None if row is None else (row[0], row[1])


def count_before(connection: Connection, before: datetime) -> int:
    """How many events `purge(connection, before)` would delete, at most."""
    return connection.execute(select(func.count()).select_from(events).where(
        events.c.created_at < before)).scalar_one()


def purge(connection: Connection, before: datetime) -> int:
    """Delete the events written before `before`, in order: those before the first newer
    one or, if none is newer, before the newest, which is kept so that `oldest` still
    tells a cursor that missed purged events (the caller's 410) from one that didn't. How
    many were deleted."""
    first_kept = connection.execute(
        select(events.c.xid, events.c.seq).where(events.c.created_at >= before)
        .order_by(events.c.xid, events.c.seq).limit(1)).first()
    if first_kept is None:
        first_kept = connection.execute(edge_statement(connection.dialect.name, True)).first()
    if first_kept is None:
        return 0
    return connection.execute(delete(events).where(
        tuple_(events.c.xid, events.c.seq) < tuple_(*first_kept))).rowcount
