"""The SQL behind the messages resource. A read is one statement: each message as one
JSON value (message_json), its attachment ids and key/value objects aggregated by
correlated subqueries. A write is one statement where it can be, atomic on its own; where
it can't, its statements run on `db.atomic()`, so they commit together with the rest of
the request's write (db.Database.write). Every write through the API also writes its event
(outbox.py) in the same transaction: on PostgreSQL in the same statement (a data-modifying
CTE), on SQLite as one more statement. Nothing here commits."""
import operator
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cache, lru_cache
from itertools import chain
from typing import NamedTuple, cast

import orjson
import psycopg
from sqlalchemy import (
    Connection,
    Select,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from . import outbox
from .db import db
from .message_json import SCALAR_FIELDS, MessageJSON, decode, format_date_time, stored_json
from .models import CHANNEL_FIELDS, attachments, key_values, messages

m = messages.alias("m")

FIELD_CHANNELS = {field: channel for channel, field in CHANNEL_FIELDS.items()}
COMPARISONS = {"": operator.eq, "gte": operator.ge, "gt": operator.gt, "lte": operator.le,
               "lt": operator.lt}


# --- Scope, filters, order --------------------------------------------------------------

def in_scope(statement, table, organization: str | None):
    """Only the messages of `organization`; None: every organization's."""
    if organization is None:
        return statement
    return statement.where(table.c.organization == organization)


def with_scope(statement, table, scoped: bool):
    """`in_scope` for a statement built once: the organization is the :scope parameter."""
    return statement.where(table.c.organization == bindparam("scope")) if scoped else statement


def filtered(statement, table, filters: dict):
    """`field=value` and `field__gte=value` style filters (`id__lt` too, for cursors)."""
    for param, value in filters.items():
        name, _, comparison = param.partition("__")
        statement = statement.where(COMPARISONS[comparison](table.c[name], value))
    return statement


def matcher(filters: dict) -> Callable[[dict], bool]:
    """`filtered`'s filters, as a test of a message's JSON object (an event's, say)."""
    tests = []
    for param, value in filters.items():
        name, _, comparison = param.partition("__")
        wanted = format_date_time(value) if isinstance(value, datetime) else value
        tests.append((name, COMPARISONS[comparison], wanted))

    def matches(message: dict) -> bool:
        return all(message[name] is not None and compare(message[name], wanted)
                   for name, compare, wanted in tests)

    return matches


def ordered(statement, table, terms: Iterable[tuple[str, bool]]):
    """ORDER BY (field, descending) terms."""
    return statement.order_by(*order_by(table, terms))


def order_by(table, terms: Iterable[tuple[str, bool]]) -> list:
    """(field, descending) terms as ORDER BY clauses. Nulls sort after every value on both
    databases, as PostgreSQL sorts them (so its plain DESC indexes serve newest-first
    lists)."""
    return [table.c[name].desc().nulls_first() if descending else table.c[name].asc().nulls_last()
            for name, descending in terms]


# --- Reads ------------------------------------------------------------------------------

@cache
def read_message_statement(scoped: bool) -> Select:
    statement = select(MessageJSON(m), m.c.row_version)
    return with_scope(statement.where(m.c.id == bindparam("message_id")), m, scoped)


def read_message(connection: Connection, message_id: str,
                 organization: str | None) -> tuple[dict, int] | None:
    """The message and its row_version, or None."""
    statement = read_message_statement(organization is not None)
    row = connection.execute(statement, {"message_id": message_id, "scope": organization}).first()
    return None if row is None else (decode(row[0]), row.row_version)


def matching(columns, filters: dict, organization: str | None) -> Select:
    """SELECT columns of the messages that a list request asks for."""
    return filtered(in_scope(select(*columns), messages, organization), messages, filters)


def counted(filters: dict, organization: str | None, limit: int) -> Select:
    """SELECT how many messages match, counting no further than `limit`."""
    matches = matching([messages.c.id], filters, organization).limit(limit).subquery()
    return select(func.count()).select_from(matches)


def count_messages(connection: Connection, filters: dict, organization: str | None,
                   limit: int) -> int:
    return connection.scalar(counted(filters, organization, limit))


class Page(NamedTuple):
    rows: int  # messages on the page
    more: bool  # whether another follows it
    last_id: str | None  # the id of its last message, if another follows
    matches: int | None  # how many match, counted up to the count limit asked for (if any)
    messages: Generator[dict, None, None]  # read from the database as they are taken


# Time columns: a range of one holds messages that crowd together in id order (the last
# days' messages have the newest ids). For a page of them in id order, the planner walks
# the id index, expecting them spread out, and reads every month before the range first
# (1.8 s for a day of 10,000,000 messages). Where the range holds no more than
# NARROW_LIMIT messages, they are read through its own index and sorted instead.
CROWDING = {"creation_time", "last_update_time", "event_time"}
NARROW_LIMIT = 50_000


def page_ids(filters: dict, organization: str | None, terms: list[tuple[str, bool]],
             page_size: int, offset: int):
    """A page's ids (and sort keys), with one more to tell whether another page follows."""
    columns = [messages.c.id, *(messages.c[name] for name in dict(terms) if name != "id")]

    def page(statement, table):
        return ordered(statement, table, terms).limit(page_size + 1).offset(offset)

    walk = page(matching(columns, filters, organization), messages)
    ranges = {param.partition("__")[0] for param in filters if "__" in param}
    if terms[0][0] != "id" or not ranges & CROWDING:
        return walk.subquery("chosen")
    narrow = matching(columns, filters, organization).limit(NARROW_LIMIT + 1).cte(
        "narrow").prefix_with("MATERIALIZED")
    few = select(func.count()).select_from(narrow).scalar_subquery() <= NARROW_LIMIT
    return union_all(select(page(select(narrow).where(few), narrow).subquery()),
                     select(walk.where(~few).subquery())).subquery("chosen")


def read_page(connection: Connection, filters: dict, organization: str | None,
              terms: list[tuple[str, bool]], page_size: int, offset: int = 0,
              count_limit: int | None = None) -> Page:
    """One page of messages, in one statement: how many it has, whether more follow (and
    its last id), how many match in all (counted up to `count_limit`, if given), and the
    messages. The page's ids (and sort keys) are chosen first, from an index alone where
    one serves the filters and the order, and only its rows are then read and their
    children aggregated: neither is done for the rows an OFFSET skips. The messages are
    read as they are taken, so a page of large ones is never whole in memory; nothing else
    may run on `connection` until they all have been."""
    statement = page_statement(filters, organization, terms, page_size, offset, count_limit)
    rows = stream_rows(connection, statement)
    first = next(rows, None)
    if first is None:
        return Page(0, False, None, None, page_messages(None, rows, page_size))
    more = first[1] > page_size
    return Page(min(first[1], page_size), more, first[2] if more else None,
                first[3] if count_limit is not None else None,
                page_messages(first, rows, page_size))


def page_statement(filters: dict, organization: str | None, terms: list[tuple[str, bool]],
                   page_size: int, offset: int, count_limit: int | None) -> Select:
    """read_page's statement."""
    chosen = page_ids(filters, organization, terms, page_size, offset)
    last_id = func.nth_value(chosen.c.id, page_size).over(order_by=order_by(chosen, terms),
                                                          rows=(None, None))
    page = select(chosen, func.count().over().label("page_rows"), last_id.label("last_id"),
                  ).subquery("page")
    columns = [MessageJSON(m), page.c.page_rows, page.c.last_id]
    if count_limit is not None:
        columns.append(counted(filters, organization, count_limit).scalar_subquery())
    return ordered(select(*columns).select_from(page.join(m, m.c.id == page.c.id)), page,
                   terms)


def read_page_and_count(connection: Connection, filters: dict, organization: str | None,
                        terms: list[tuple[str, bool]], page_size: int, offset: int,
                        count_limit: int) -> tuple[Page, int | None]:
    """A page of a numbered list, and how many messages match: None past `count_limit`
    (or past the page's end, if that is further), since counting all matches would cost
    more than the page itself on a large table. Within the limit the page's statement
    counts too. Past it, the page (read with one message more) tells: when the list ends on
    it, that gives the count, and when more follow, that there are too many to count; only
    a page past the end has a count to make."""
    enough = max(count_limit, offset + page_size)
    shallow = offset + page_size < count_limit
    page = read_page(connection, filters, organization, terms, page_size, offset,
                     enough + 1 if shallow else None)
    if page.matches is not None:
        counted = page.matches
    elif page.more:
        counted = enough + 1
    elif page.rows or not offset:
        counted = offset + page.rows
    else:
        counted = count_messages(connection, filters, organization, enough + 1)
    return page, counted if counted <= enough else None


def page_messages(first: Sequence | None, rows: Generator[Sequence, None, None],
                  page_size: int) -> Generator[dict, None, None]:
    """The messages of `first` and the rows after it, `page_size` in all; the one after
    them is read and dropped. Closed early, it closes the stream (psycopg then cancels its
    statement), which must be done before the connection runs anything else."""
    try:
        for n, row in enumerate(chain([] if first is None else [first], rows)):
            if n < page_size:
                yield decode(row[0])
    finally:
        rows.close()


STREAMED_ROWS = 16


def stream_rows(connection: Connection, statement: Select) -> Generator[Sequence, None, None]:
    """The statement's rows, fetched STREAMED_ROWS at a time: on PostgreSQL in libpq's
    chunked-rows mode (psycopg's Cursor.stream: no transaction, no server-side cursor,
    which SQLAlchemy's stream_results would need), on SQLite as its cursor steps through
    them."""
    if connection.dialect.name != "postgresql":
        yield from connection.execute(statement)
        return
    compiled = statement.compile(dialect=connection.dialect)  # (built for this request)
    with on_driver(connection, compiled, {}) as (driver, sql, params):
        yield from driver.cursor().stream(sql, params, size=STREAMED_ROWS)


def execute_on_driver(connection: Connection, statement: ClauseElement,
                      params: dict) -> psycopg.Cursor:
    """PostgreSQL: run `statement`, one of the hot writes, as SQLAlchemy would (see
    on_driver), on its driver's cursor: SQLAlchemy's execution (its cursor result and the
    result's metadata) took 5-6% of a write's time."""
    compiled = compile_once(statement, connection.dialect)
    with on_driver(connection, compiled, params) as (driver, sql, bound):
        return driver.execute(sql, bound)


@contextmanager
def on_driver(connection: Connection, compiled: SQLCompiler, values: dict
              ) -> Iterator[tuple[psycopg.Connection, str, dict]]:
    """PostgreSQL: the driver's connection of `connection`, in whatever transaction state
    SQLAlchemy has put it, with the SQL of a `compiled` statement and its parameters for
    `values` (type-processed as SQLAlchemy would). The `before_cursor_execute` event fires,
    and a driver's error is raised as SQLAlchemy's (the connection invalidated if it was
    lost): as if SQLAlchemy had run the statement."""
    if compiled.post_compile_params:  # an expanding IN, rendered for these values
        state = compiled.construct_expanded_state(values)
        sql, params = state.statement, dict(state.parameters)
    else:
        sql, params = compiled.string, dict(compiled.construct_params(values))
    for name, process in compiled._bind_processors.items():  # as SQLAlchemy's execution
        if name in params and callable(process):  # (a sequence: for tuples, none here)
            params[name] = process(params[name])
    connection.dispatch.before_cursor_execute(connection, None, sql, params, None, False)
    driver = cast(psycopg.Connection, connection.connection.driver_connection)
    try:
        yield driver, sql, params
    except psycopg.Error as error:
        lost = driver.broken
        if lost:
            connection.invalidate(error)
        raise DBAPIError.instance(sql, params, error, psycopg.Error,
                                  connection_invalidated=lost) from error


@lru_cache(maxsize=4096)  # update_with_event builds up to 1024 statements, per app's dialect
def compile_once(statement: ClauseElement, dialect: Dialect) -> SQLCompiler:
    return cast(SQLCompiler, statement.compile(dialect=dialect))


# --- Writes -----------------------------------------------------------------------------

# Child rows go in as one JSON array per table, unpacked by the database: one cached
# statement whatever the number of rows (of one message or of many). Per database, with
# :items, each item beginning with its message's id.
INSERT_CHILDREN = {
    "postgresql": (
        text("INSERT INTO message_attachments (message_id, ordinal, attachment_id)"
             " SELECT item->>0, CAST(item->>1 AS integer), item->>2"
             " FROM json_array_elements(CAST(:items AS json)) AS item"),
        text("INSERT INTO message_key_values"
             " (message_id, channel, ordinal, keys_text, values_text, queryparam)"
             " SELECT item->>0, item->>1, CAST(item->>2 AS integer), item->>3, item->>4,"
             " CAST(item->>5 AS boolean) FROM json_array_elements(CAST(:items AS json)) AS item"),
    ),
    "sqlite": (
        text("INSERT INTO message_attachments (message_id, ordinal, attachment_id)"
             " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
             " json_extract(value, '$[2]') FROM json_each(:items)"),
        text("INSERT INTO message_key_values"
             " (message_id, channel, ordinal, keys_text, values_text, queryparam)"
             " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
             " json_extract(value, '$[2]'), json_extract(value, '$[3]'),"
             " json_extract(value, '$[4]'), json_extract(value, '$[5]') FROM json_each(:items)"),
    ),
}
# Statements are built once: building one costs more than running it.
INSERT_MESSAGE = insert(messages)  # the columns are those of the parameters
DELETE_ATTACHMENTS = delete(attachments).where(attachments.c.message_id == bindparam("message_id"))
DELETE_KEY_VALUES = delete(key_values).where(
    key_values.c.message_id == bindparam("message_id"),
    key_values.c.channel.in_(bindparam("channels", expanding=True)),
)


def with_versions(statement, guarded: bool):
    """Only while the row_version is one of the :versions parameter (If-Match)."""
    if not guarded:
        return statement
    return statement.where(messages.c.row_version.in_(bindparam("versions", expanding=True)))


# The message's organization before an update that may move it, read by a write that
# changes nothing: it waits for, and takes, the row's lock (SQLite: the database's), so
# that a move committed meanwhile is the one it reads and the next waits for this one.
# (Read in the UPDATE's own statement, PostgreSQL gives the organization of the
# statement's snapshot: two moves at once would both name the first organization, and the
# second's never hear its message left.)
READ_ORGANIZATION_LOCKED = (update(messages).where(messages.c.id == bindparam("message_id"))
                            .values(organization=messages.c.organization)
                            .returning(messages.c.organization))


@cache
def update_statement(scoped: bool, guarded: bool, return_message: bool):
    """UPDATE messages SET <the parameters' columns>, row_version + 1 WHERE id = :message_id
    [AND scope] [AND row_version IN :versions], returning the message (or only its id) and
    its organization (twice: as the event's previous one too, for an update that doesn't
    move it)."""
    statement = update(messages).where(messages.c.id == bindparam("message_id"))
    statement = with_versions(with_scope(statement, messages, scoped), guarded)
    statement = statement.values(row_version=messages.c.row_version + 1)
    returned = [messages.c.id, messages.c.organization,
                messages.c.organization.label("previous_organization")]
    if return_message:
        returned = [MessageJSON(messages).label("message"), messages.c.row_version, *returned]
    return statement.returning(*returned)


@lru_cache(maxsize=1024)
def update_with_event(scoped: bool, guarded: bool, columns: tuple[str, ...]) -> Select:
    """PostgreSQL: `update_statement`'s UPDATE and its event, one statement, for an update
    that doesn't move the message to another organization. An UPDATE in a
    CTE takes its SET columns from no execution's parameters: they are named here,
    `set_<column>`, and so built once per set of columns a client updates."""
    values = {name: bindparam(f"set_{name}", type_=messages.c[name].type) for name in columns}
    changed = update_statement(scoped, guarded, True).values(values).cte("changed")
    event = outbox.insert_from("postgresql", changed, "updated").cte("event")
    return select(changed.c.message, changed.c.row_version).add_cte(event)


@cache
def snapshot_with_event() -> Select:
    """PostgreSQL: the message :message_id as it is now, and its event (moved from
    :previous_organization), one statement."""
    now = select(MessageJSON(m).label("message"), m.c.row_version, m.c.id, m.c.organization,
                 bindparam("previous_organization", type_=Text).label("previous_organization"),
                 ).where(m.c.id == bindparam("message_id")).cte("now")
    event = outbox.insert_from("postgresql", now, "updated").cte("event")
    return select(now.c.message, now.c.row_version).add_cte(event)


@cache
def delete_statement(scoped: bool, guarded: bool):
    statement = delete(messages).where(messages.c.id == bindparam("message_id"))
    statement = with_versions(with_scope(statement, messages, scoped), guarded)
    return statement.returning(messages.c.id, messages.c.organization,
                               messages.c.organization.label("previous_organization"))


@cache
def delete_with_event(scoped: bool, guarded: bool) -> Select:
    """PostgreSQL: the DELETE and its event, one statement."""
    gone = delete_statement(scoped, guarded).cte("gone")
    event = outbox.insert_from("postgresql", gone, "deleted").cte("event")
    return select(gone.c.id).add_cte(event)


def replace_children(connection: Connection, message_id: str, fields: dict,
                     existing: bool) -> None:
    """Store the lists and key/value objects in `fields`, replacing those of the message."""
    if "attachment_ids" in fields and existing:
        connection.execute(DELETE_ATTACHMENTS, {"message_id": message_id})
    channels = [channel for field, channel in FIELD_CHANNELS.items() if field in fields]
    if channels and existing:
        connection.execute(DELETE_KEY_VALUES, {"message_id": message_id, "channels": channels})
    insert_children(connection, [{"id": message_id, **fields}])


def insert_children(connection: Connection, messages: list[dict]) -> None:
    """Insert the attachment ids and key/value objects that `messages` carry (each a dict
    with the message's `id`); one statement per child table, none for no rows."""
    insert_attachments, insert_key_values = INSERT_CHILDREN[connection.dialect.name]
    attachment_items = [(message["id"], i, attachment_id) for message in messages
                        for i, attachment_id in enumerate(message.get("attachment_ids") or ())]
    key_value_items = [(message["id"], *row) for message in messages
                       for row in key_value_rows(message)]
    if attachment_items:
        connection.execute(insert_attachments, {"items": orjson.dumps(attachment_items).decode()})
    if key_value_items:
        connection.execute(insert_key_values, {"items": orjson.dumps(key_value_items).decode()})


def key_value_rows(fields: dict) -> list[tuple]:
    """(channel, ordinal, keys, values, queryparam) of the key/value objects in `fields`."""
    return [
        (channel, i, item["keys"], item["values"], item["queryparam"])
        for field, channel in FIELD_CHANNELS.items() if field in fields
        for i, item in enumerate(key_value_items(fields[field]))
    ]


def key_value_items(value) -> list:
    """`message_read_map` is a list already; a `*_data` object is one item or none."""
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


# PostgreSQL inserts a message with its children in one statement (data-modifying CTEs).
INSERT_MESSAGE_POSTGRESQL = text(
    "WITH m AS (INSERT INTO messages ({columns}) VALUES ({values}) RETURNING id, organization),"
    " e AS ({event}),"
    " a AS (INSERT INTO message_attachments (message_id, ordinal, attachment_id)"
    " SELECT m.id, ordinality - 1, value"
    " FROM m, json_array_elements_text(CAST(:attachment_items AS json)) WITH ORDINALITY)"
    " INSERT INTO message_key_values"
    " (message_id, channel, ordinal, keys_text, values_text, queryparam)"
    " SELECT m.id, item->>0, CAST(item->>1 AS integer), item->>2, item->>3,"
    " CAST(item->>4 AS boolean) FROM m, json_array_elements(CAST(:key_value_items AS json)) item"
    .format(columns=", ".join(SCALAR_FIELDS), values=", ".join(f":{n}" for n in SCALAR_FIELDS),
            event=outbox.inserted_sql("postgresql"))
).bindparams(*(bindparam(name, type_=messages.c[name].type) for name in SCALAR_FIELDS))


def insert_message(message: dict) -> None:
    """Insert a complete message (message_json.new_message's), in the request's write."""
    row = {name: message[name] for name in SCALAR_FIELDS}
    connection = db.connection()
    if connection.dialect.name == "postgresql":
        execute_on_driver(connection, INSERT_MESSAGE_POSTGRESQL, {
            **row, "attachment_items": orjson.dumps(message["attachment_ids"]).decode(),
            "key_value_items": orjson.dumps(key_value_rows(message)).decode(),
            "event_message": stored_json(message)})
        return
    connection = db.atomic()
    connection.execute(INSERT_MESSAGE, row)
    replace_children(connection, message["id"], message, existing=False)
    outbox.record(connection, "created", message["id"], message["organization"],
                  message["organization"], stored_json(message))


# Bulk loads insert only the messages whose id is not stored yet, and learn which went in.
# PostgreSQL takes a batch as one JSON array of rows (one parameter: nothing for the driver
# to render); SQLite as multi-row INSERTs from SQLAlchemy, which stores its date-times.
INSERT_NEW_MESSAGES_POSTGRESQL = text(
    "INSERT INTO messages ({columns}) SELECT {columns}"
    " FROM json_populate_recordset(NULL::messages, CAST(:rows AS json))"
    " ON CONFLICT (id) DO NOTHING RETURNING id".format(columns=", ".join(SCALAR_FIELDS))
)
INSERT_NEW_MESSAGES_SQLITE = (
    sqlite.insert(messages).on_conflict_do_nothing(index_elements=["id"]).returning(messages.c.id)
)


def insert_new_messages(connection: Connection, batch: list[dict]) -> set[str]:
    """Insert the complete messages of `batch` (as `insert_message` takes them) whose id is
    not stored yet, with their children, and return their ids; stored ones are left as
    they are. One transaction, which the caller commits."""
    rows = [{name: message[name] for name in SCALAR_FIELDS} for message in batch]
    if connection.dialect.name == "postgresql":
        params = {"rows": orjson.dumps(rows).decode()}
        inserted = set(connection.scalars(INSERT_NEW_MESSAGES_POSTGRESQL, params))
    else:
        inserted = set(connection.scalars(INSERT_NEW_MESSAGES_SQLITE, rows))
    insert_children(connection, [message for message in batch if message["id"] in inserted])
    return inserted


def changes_children(fields: dict) -> bool:
    return any(field in fields for field in ("attachment_ids", *FIELD_CHANNELS))


def update_message(message_id: str, fields: dict, organization: str | None,
                   versions: list[int] | None = None) -> tuple[dict, int] | None:
    """Set the fields sent, in the request's write, with its event; return the message and
    its new row_version, or None when there is no such message (or, given `versions`, its
    row_version is none of them). The UPDATE comes first: it finds (and locks) the row
    before any child row changes."""
    params = {name: value for name, value in fields.items() if name in messages.c}
    params |= {"message_id": message_id, "scope": organization, "versions": versions}
    children, moves = changes_children(fields), "organization" in fields
    scoped, guarded = organization is not None, versions is not None
    connection = db.connection()
    postgresql = connection.dialect.name == "postgresql"
    if postgresql and not children and not moves:  # one UPDATE ... RETURNING, and its event
        columns = tuple(sorted(name for name in fields if name in messages.c))
        statement = update_with_event(scoped, guarded, columns)
        params |= {f"set_{name}": params.pop(name) for name in columns}
        row = execute_on_driver(connection, statement, params).fetchone()
        return None if row is None else (decode(row[0]), row[1])
    connection = db.atomic()
    before = None
    if moves:
        before = connection.execute(READ_ORGANIZATION_LOCKED, params).first()
    statement = update_statement(scoped, guarded, not children)
    row = connection.execute(statement, params).first()
    if row is None:
        return None
    previous = row.previous_organization if before is None else before[0]
    if children:
        replace_children(connection, message_id, fields, existing=True)
        return snapshot(connection, message_id, previous)
    outbox.record(connection, "updated", message_id, row.organization, previous, row.message)
    return decode(row.message), row.row_version


def snapshot(connection: Connection, message_id: str,
             previous_organization: str | None) -> tuple[dict, int]:
    """The message as it is now, with its row_version, and its `updated` event."""
    params = {"message_id": message_id, "previous_organization": previous_organization}
    if connection.dialect.name == "postgresql":
        row = connection.execute(snapshot_with_event(), params).one()
        return decode(row[0]), row.row_version
    row = connection.execute(read_message_statement(False), params).one()
    message = decode(row[0])
    outbox.record(connection, "updated", message_id, message["organization"],
                  previous_organization, row[0])
    return message, row.row_version


def delete_message(message_id: str, organization: str | None,
                   versions: list[int] | None = None) -> bool:
    """Delete a message (given `versions`, only at one of them), in the request's write,
    with its event; its child rows go with it (ON DELETE CASCADE)."""
    scoped, guarded = organization is not None, versions is not None
    params = {"message_id": message_id, "scope": organization, "versions": versions}
    connection = db.connection()
    if connection.dialect.name == "postgresql":
        statement = delete_with_event(scoped, guarded)
        return execute_on_driver(connection, statement, params).fetchone() is not None
    connection = db.atomic()
    row = connection.execute(delete_statement(scoped, guarded), params).first()
    if row is not None:
        outbox.record(connection, "deleted", message_id, row.organization, row.organization)
    return row is not None
