"""`flask import-mongo FILE` and `flask export FILE`: messages in from a `mongoexport` of the
original service's collection (or from an export of this one), and out as JSON lines in the
API's shape. Both stream: memory stays the same whatever the size of the file.

A document is read as MongoDB Extended JSON v2, canonical or relaxed. Only the wrappers
that the collection's fields can hold are decoded (`$oid`, `$date`, `$numberInt`,
`$numberLong`, `$numberDouble`), here rather than with pymongo's `bson.json_util`: that
would bring the MongoDB driver and dnspython into the service for five small cases, and
parse with the standard library's json instead of orjson. Any other wrapper is reported as
a bad document. The document is then validated by the API's own MessageInputSchema, so an
imported row is one the API could have written.
"""
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import click
import ijson
import orjson
from flask import current_app
from marshmallow import ValidationError, missing
from sqlalchemy import BigInteger, Column, Connection, MetaData, String, Table, select, text
from sqlalchemy.exc import DBAPIError

from . import queries
from .config import session_url
from .db import make_engine
from .message_json import format_date_time, new_message
from .models import OBJECT_ID_PATTERN
from .schemas import MessageInputSchema, UTCDateTime

MESSAGE_SCHEMA = MessageInputSchema()
# Read-only to the API's schema (the API sets it), so read here as the schema reads times.
EVENT_TIME = UTCDateTime(required=True)
DATE_TIME_FIELDS = ("event_time", "creation_time", "last_update_time")
OBJECT_ID = re.compile(OBJECT_ID_PATTERN)
ANY_CASE_OBJECT_ID = re.compile(OBJECT_ID_PATTERN, re.IGNORECASE)
INTEGER = re.compile(r"-?[0-9]+")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadDocument(Exception):
    """A document that can't be imported: why, and where in it (a path of keys)."""

    def __init__(self, reason: str, path: tuple = ()) -> None:
        super().__init__(reason)
        self.reason, self.path = reason, path

    def within(self, key) -> "BadDocument":
        """The same error, in the field or element `key` of the enclosing value."""
        return BadDocument(self.reason, (key, *self.path))

    def __str__(self) -> str:
        return ".".join(map(str, self.path)) + ": " + self.reason if self.path else self.reason


# --- Extended JSON ----------------------------------------------------------------------

def integer(text: str) -> int:
    if not isinstance(text, str) or not INTEGER.fullmatch(text):
        raise ValueError
    return int(text)


def double(text: str) -> float:
    if not isinstance(text, str):
        raise ValueError
    return float(text)  # also "Infinity", "-Infinity", "NaN", as Extended JSON writes them


def object_id(text: str) -> str:
    if not isinstance(text, str) or not ANY_CASE_OBJECT_ID.fullmatch(text):
        raise ValueError
    return text.lower()


def date(value) -> datetime:
    """Relaxed `{"$date": "ISO 8601"}`, canonical `{"$date": {"$numberLong": "ms"}}`, and
    the legacy `{"$date": ms}` of older tools."""
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    if isinstance(value, dict) and list(value) == ["$numberLong"]:
        value = integer(value["$numberLong"])
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError
    return EPOCH + timedelta(milliseconds=value)


WRAPPERS = {"$oid": object_id, "$date": date, "$numberInt": integer, "$numberLong": integer,
            "$numberDouble": double}


def from_extended_json(value):
    """Plain values from Extended JSON: an ObjectId as its hex string (as the original API
    showed it), a date as a datetime, numbers as int or float."""
    if type(value) is dict:
        if value and next(iter(value))[:1] == "$":
            return unwrap(value)
        fields = {}
        for key, item in value.items():
            try:
                fields[key] = from_extended_json(item)
            except BadDocument as error:
                raise error.within(key) from None
        return fields
    if type(value) is list:
        items = []
        for i, item in enumerate(value):
            try:
                items.append(from_extended_json(item))
            except BadDocument as error:
                raise error.within(i) from None
        return items
    return value


def unwrap(value: dict):
    kind = next(iter(value))
    decode = WRAPPERS.get(kind)
    if decode is None or len(value) != 1:
        raise BadDocument(f"{kind} values can't be imported (not a type of these fields)")
    try:
        return decode(value[kind])
    except (ValueError, TypeError, OverflowError):
        raise BadDocument(f"not a valid {kind}: {orjson.dumps(value).decode()}") from None


# --- Documents --------------------------------------------------------------------------

def message_from_document(document) -> dict:
    """The complete message (as the API's POST stores one) that `document` holds: a
    mongoexport document (`_id`) or one of `export`'s lines (`id`)."""
    if not isinstance(document, dict):
        raise BadDocument("not a JSON object")
    if "_id" in document and "id" in document:
        raise BadDocument("has both _id and id")
    fields = from_extended_json(document)
    message_id = fields.pop("_id") if "_id" in fields else fields.pop("id", None)
    if message_id is None:
        raise BadDocument("id: missing or null (neither _id nor id)")
    if not isinstance(message_id, str) or not OBJECT_ID.fullmatch(message_id):
        raise BadDocument(f"id: not an ObjectId (24 hexadecimal digits): "
                          f"{orjson.dumps(message_id).decode()}")
    for name in DATE_TIME_FIELDS:  # the schema reads date-times from text
        if isinstance(fields.get(name), datetime):
            fields[name] = format_date_time(fields[name])
    errors: dict[str, Any] = {}
    try:
        event_time = EVENT_TIME.deserialize(fields.pop("event_time", missing))
    except ValidationError as error:
        errors["event_time"] = error.messages
    try:
        fields = MESSAGE_SCHEMA.load(fields)
    except ValidationError as error:
        errors.update(error.messages_dict)
    if errors:
        raise BadDocument("; ".join(flatten(errors)))
    # What the API sets at creation: the times default to the time the message was stored.
    return new_message(fields, event_time, message_id)


def flatten(messages, path: str = ""):
    """marshmallow's nested error messages as `field.0.key: message` strings."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from flatten(value, f"{path}.{key}" if path else str(key))
    else:
        yield f"{path}: {' '.join(messages)}"


def json_lines(file):
    """(line number, document or BadDocument) for each non-blank line."""
    for number, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as error:
            hint = " (a JSON array? use --jsonArray)" if line.lstrip().startswith(b"[") else ""
            yield number, BadDocument(f"not valid JSON{hint}: {error.msg} at column "
                                      f"{error.pos + 1}")


def json_array(file):
    """(element index, document) for each element of one JSON array, parsed as it is read.
    After a syntax error nothing further can be read: it is the last thing yielded. (ijson's
    C backend reads a lone surrogate escape as "?"; BSON strings are UTF-8, so a mongoexport
    has none.)"""
    head = file.peek(64).lstrip() if hasattr(file, "peek") else b""
    if head and not head.startswith(b"["):
        yield 0, BadDocument("not a JSON array (leave out --jsonArray for JSON lines); "
                             "nothing read")
        return
    index = 0
    try:
        for document in ijson.items(file, "item", use_float=True):
            yield index, document
            index += 1
    except ijson.JSONError as error:  # yajl's message: its first line says what it found
        reason = error.args[0] if error.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        yield index, BadDocument(f"not valid JSON: {reason.splitlines()[0] if reason else error}; "
                                 "nothing after it was read")


# --- import-mongo -----------------------------------------------------------------------

@contextmanager
def bulk_connection(url: str, pooled: bool) -> Iterator[Connection]:
    """A connection of its own to `url` (through a transaction pooler if `pooled`), without
    the requests' timeouts (a bulk job is no request); its temporary table goes with it."""
    engine = make_engine(url, pooled=pooled)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


# The ids read so far in this run, kept by the database (a temporary table: memory stays
# flat), to tell a duplicate id in the file from a message stored before. A batch's ids go
# in as one JSON array of [id, position]; those that went in are new to the file.
SEEN = Table("import_seen_ids", MetaData(), Column("id", String(24), primary_key=True),
             Column("position", BigInteger, nullable=False), prefixes=["TEMPORARY"])
INSERT_SEEN = {
    "postgresql": text(
        "INSERT INTO import_seen_ids (id, position)"
        " SELECT item->>0, CAST(item->>1 AS bigint) FROM json_array_elements(CAST(:items AS json))"
        " AS item ON CONFLICT (id) DO NOTHING RETURNING id"),
    "sqlite": text(  # WHERE true: SQLite's parser needs it before ON CONFLICT
        "INSERT INTO import_seen_ids (id, position)"
        " SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:items)"
        " WHERE true ON CONFLICT (id) DO NOTHING RETURNING id"),
}


class Progress:
    """Counts, bad documents as they are found, and a line on stderr after each batch."""

    def __init__(self, where: str) -> None:
        self.where = where  # "line" or "element"
        self.read = self.imported = self.skipped = self.bad = 0
        self.started = time.monotonic()

    def bad_document(self, position: int, reason: str) -> None:
        self.bad += 1
        click.echo(f"{self.where} {position}: {reason}", err=True)

    def stored(self, result: "BatchResult") -> None:
        self.imported += result.imported
        self.skipped += result.skipped
        for position, earlier, message_id in result.repeated:
            self.bad_document(position, f"id: {message_id} again (first at "
                                        f"{self.where} {earlier})")

    def report(self, prefix: str = "") -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        click.echo(f"{prefix}{self.read:,} read, {self.imported:,} imported, "
                   f"{self.skipped:,} skipped (stored already), {self.bad:,} bad; "
                   f"{elapsed:.1f} s, {self.read / elapsed:,.0f} documents/s", err=True)


class BatchResult(NamedTuple):
    imported: int
    skipped: int
    repeated: list[tuple[int, int, str]]  # (position, position of its first read, id)


def store_batch(connection: Connection, batch: list[tuple[int, dict]]) -> BatchResult:
    """Insert a batch's new messages in one transaction. Messages stored already are
    skipped; an id read before from the file (in this batch or an earlier one) is
    repeated."""
    first_positions: dict[str, int] = {}
    repeated = []
    for position, message in batch:
        earlier = first_positions.setdefault(message["id"], position)
        if earlier != position:
            repeated.append((position, earlier, message["id"]))
    with connection.begin():
        items = orjson.dumps(list(first_positions.items())).decode()
        first_read = set(connection.scalars(INSERT_SEEN[connection.dialect.name],
                                            {"items": items}))
        read_before = [message_id for message_id in first_positions
                       if message_id not in first_read]
        if read_before:
            first_reads = connection.execute(select(SEEN.c.id, SEEN.c.position)
                                             .where(SEEN.c.id.in_(read_before)))
            repeated += [(first_positions[message_id], position, message_id)
                         for message_id, position in first_reads]
        new = [message for position, message in batch
               if message["id"] in first_read and first_positions[message["id"]] == position]
        inserted = queries.insert_new_messages(connection, new) if new else set()
    return BatchResult(len(inserted), len(new) - len(inserted), sorted(repeated))


def import_url() -> str:
    """The import's temporary table lives as long as its session: not through a pooler."""
    url = session_url(current_app.config)
    if url is None:
        raise click.ClickException(
            "import-mongo needs a session of its own, which a transaction pooler can't give: "
            "set DATABASE_SESSION_URL to PostgreSQL itself.")
    return url


def import_mongo(file, json_array_format: bool, batch_size: int) -> None:
    """Import the documents of `file` (see cli.import_mongo_command)."""
    documents = json_array(file) if json_array_format else json_lines(file)
    progress = Progress("element" if json_array_format else "line")
    # One batch is written (by the writer thread, waiting on the database) while the next
    # is read and validated (Python), so the two overlap.
    try:
        with bulk_connection(import_url(), pooled=False) as connection, \
                ThreadPoolExecutor(max_workers=1) as writer:
            with connection.begin():
                SEEN.create(connection)
            batch, writing = [], None
            for position, document in documents:
                progress.read += 1
                try:
                    if isinstance(document, BadDocument):
                        raise document
                    batch.append((position, message_from_document(document)))
                except BadDocument as error:
                    progress.bad_document(position, str(error))
                if len(batch) >= batch_size:
                    if writing is not None:
                        progress.stored(writing.result())
                        progress.report()
                    batch, writing = [], writer.submit(store_batch, connection, batch)
            if writing is not None:
                progress.stored(writing.result())
            if batch:
                progress.stored(store_batch(connection, batch))
            if progress.imported:  # statistics for the planner now, not when autovacuum runs
                with connection.begin():
                    for table in ("messages", "message_attachments", "message_key_values"):
                        connection.exec_driver_sql(f"ANALYZE {table}")
    except DBAPIError as error:
        progress.report("stopped: ")
        raise click.ClickException(
            f"the database refused a batch ({error.orig}); the messages counted as imported "
            "are stored, and a new run skips them") from error
    progress.report("done: ")
    if progress.bad:
        raise SystemExit(1)


# --- export -----------------------------------------------------------------------------

def export_url() -> str:
    """A replica that serves reads now, if there is one; else the primary."""
    replicas = current_app.extensions["replicas"]
    replicas.check_now()
    replica = replicas.choose(None)
    if replica is None or replica.engine is None:
        return current_app.config["DATABASE_URL"]
    click.echo(f"exporting from replica {replica.name}", err=True)
    return replica.engine.url.render_as_string(hide_password=False)


def export(file, organization: str | None, batch_size: int) -> None:
    """Write the messages to `file` (see cli.export_command)."""
    started = time.monotonic()
    count = 0
    pooled = current_app.config["DATABASE_TRANSACTION_POOLING"]
    with bulk_connection(export_url(), pooled) as connection:
        if connection.dialect.name == "postgresql":  # one snapshot from first to last batch
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            after: dict[str, str] = {}
            while batch := list(queries.read_page(connection, after, organization,
                                                  [("id", False)], batch_size).messages):
                file.write(b"".join(orjson.dumps(message) + b"\n" for message in batch))
                count += len(batch)
                after = {"id__gt": batch[-1]["id"]}
    file.flush()
    click.echo(f"exported {count:,} messages in {time.monotonic() - started:.1f} s", err=True)
