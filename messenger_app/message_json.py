"""A message's shape: the contract's 27 keys in its order, a new message's defaults
(`new_message`), and how a stored message becomes the API's JSON object: the database
builds one JSON array a message (`MessageJSON`, per dialect, from SQLAlchemy constructs),
and `decode` turns it into the API's keys. One column costs the driver and SQLAlchemy far
less than twenty-three."""
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Boolean, FromClause, Text, cast, func, literal_column, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from .models import CHANNEL_FIELDS, UTCDateTime, attachments, key_values, messages

# The contract's keys, in its order (the schemas declare them in the same order).
FIELDS = (
    "id", "event_time", "communication_id", "msg_type", "type", "user_id",
    "received_config_id", "module_id", "ref_id", "ref_display_id", "is_system_gen",
    "imap_config_id", "attachment_ids", "created_by", "organization", "creation_time",
    "last_update_time", "is_deleted", "is_assignee_read", "message_read_map", "customer_id",
    "customer_entity_id", "is_description", "email_data", "sms_data", "api_data", "beep_data",
)
SCALAR_FIELDS = tuple(name for name in FIELDS if name in messages.c)  # the messages columns
BOOLEAN_FIELDS = tuple(name for name in SCALAR_FIELDS
                       if isinstance(messages.c[name].type, Boolean))
DATE_TIME_FIELDS = tuple(name for name in SCALAR_FIELDS
                         if isinstance(messages.c[name].type, UTCDateTime))
KEY_VALUE_FIELDS = tuple(CHANNEL_FIELDS.values())  # message_read_map too
LIST_FIELDS = ("attachment_ids", "message_read_map")


class MessageJSON(ColumnElement[str]):
    """A message of `table` (`messages` or an alias of it) as the text of one JSON array:
    its columns in SCALAR_FIELDS order, then its attachment ids in order, then its
    key/value objects as [channel, keys, values, queryparam], by channel and order."""

    inherit_cache = True
    _traverse_internals = [("table", InternalTraversal.dp_clauseelement)]
    type = Text()

    def __init__(self, table: FromClause = messages) -> None:
        self.table = table


@compiles(MessageJSON, "postgresql")
def _message_json_postgresql(element: MessageJSON, compiler, **kw) -> str:
    table = element.table
    attachment_ids = select(
        func.json_agg(attachments.c.attachment_id).aggregate_order_by(attachments.c.ordinal)
    ).where(attachments.c.message_id == table.c.id).scalar_subquery()
    key_value_rows = select(
        func.json_agg(func.json_build_array(key_values.c.channel, key_values.c.keys_text,
                                            key_values.c.values_text, key_values.c.queryparam)
                      ).aggregate_order_by(key_values.c.channel, key_values.c.ordinal)
    ).where(key_values.c.message_id == table.c.id).scalar_subquery()
    # Date-times as UTC whatever the session's time zone (through a pooler, it is the
    # server's): 9999-12-31 in UTC would be year 10000 in Berlin, which Python can't read.
    columns = (func.timezone(literal_column("'UTC'"), table.c[name])
               if name in DATE_TIME_FIELDS else table.c[name] for name in SCALAR_FIELDS)
    array = func.json_build_array(*columns, attachment_ids, key_value_rows)
    return compiler.process(cast(array, Text), **kw)


@compiles(MessageJSON, "sqlite")
def _message_json_sqlite(element: MessageJSON, compiler, **kw) -> str:
    # SQLite before 3.44 has no ORDER BY inside an aggregate; as a window function over the
    # whole (ordered) partition, json_group_array keeps the order.
    table = element.table

    def ordered_array(item, child, *order) -> ColumnElement:
        whole = func.json_group_array(item).over(order_by=order, rows=(None, None))
        return func.json(select(whole).where(child.c.message_id == table.c.id).limit(1)
                         .scalar_subquery())

    attachment_ids = ordered_array(attachments.c.attachment_id, attachments,
                                   attachments.c.ordinal)
    key_value_rows = ordered_array(
        func.json_array(key_values.c.channel, key_values.c.keys_text, key_values.c.values_text,
                        key_values.c.queryparam),
        key_values, key_values.c.channel, key_values.c.ordinal)
    array = func.json_array(*(table.c[name] for name in SCALAR_FIELDS), attachment_ids,
                            key_value_rows)
    return compiler.process(array, **kw)


def decode(text: str | bytes) -> dict[str, Any]:
    """The API object of a `MessageJSON` value."""
    *scalars, attachment_ids, key_value_rows = orjson.loads(text)
    values = dict(zip(SCALAR_FIELDS, scalars, strict=True))
    for name in BOOLEAN_FIELDS:  # SQLite's JSON has 0 and 1
        values[name] = bool(values[name])
    for name in DATE_TIME_FIELDS:  # ISO 8601 text in UTC, without an offset
        if values[name] is not None:
            values[name] = format_date_time(datetime.fromisoformat(values[name]))
    values["attachment_ids"] = attachment_ids or []
    values.update(dict.fromkeys(KEY_VALUE_FIELDS))
    read_map = values["message_read_map"] = []
    for channel, keys, values_text, queryparam in key_value_rows or ():
        item = {"keys": keys, "values": values_text, "queryparam": bool(queryparam)}
        if channel == "read_map":
            read_map.append(item)
        else:
            values[CHANNEL_FIELDS[channel]] = item
    return {name: values[name] for name in FIELDS}


def new_message(fields: dict[str, Any], stored_at: datetime, message_id: str) -> dict[str, Any]:
    """A complete message: `fields` over the contract's defaults (false for a boolean, an
    empty list, else null), stored at `stored_at`, which its creation and update times
    default to."""
    defaults: dict[str, Any] = {
        name: [] if name in LIST_FIELDS else False if name in BOOLEAN_FIELDS else None
        for name in FIELDS}
    return {**defaults, "creation_time": stored_at, "last_update_time": stored_at, **fields,
            "id": message_id, "event_time": stored_at}


def encode(message: dict[str, Any]) -> dict[str, Any]:
    """The API object of a complete message held in Python (`new_message`'s)."""
    rendered = {name: message[name] for name in FIELDS}
    for name in DATE_TIME_FIELDS:
        if rendered[name] is not None:
            rendered[name] = format_date_time(rendered[name])
    return rendered


def stored_json(message: dict[str, Any]) -> str:
    """The `MessageJSON` text of a complete message held in Python (`new_message`'s): what
    the database renders for it once stored (`decode` reads both alike)."""
    scalars = [message[name] for name in SCALAR_FIELDS]
    for n, name in enumerate(SCALAR_FIELDS):
        if name in DATE_TIME_FIELDS and scalars[n] is not None:
            scalars[n] = scalars[n].astimezone(UTC).replace(tzinfo=None).isoformat()
    key_value_rows = [
        [channel, item["keys"], item["values"], item["queryparam"]]
        for channel, field in sorted(CHANNEL_FIELDS.items())
        for item in (message[field] if field == "message_read_map"
                     else [] if message[field] is None else [message[field]])]
    return orjson.dumps([*scalars, message["attachment_ids"] or None,
                         key_value_rows or None]).decode()


def format_date_time(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ`, in UTC (a naive value is UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="milliseconds")[:23] + "Z"
