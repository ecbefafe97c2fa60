"""The message resource's marshmallow schemas: the contract's 27 keys, in order."""
from datetime import datetime, timezone

from marshmallow import EXCLUDE, Schema, fields, pre_load, validate

from .config import Config

INT32 = validate.Range(min=-(2**31), max=2**31 - 1)
SHORT_TEXT = validate.Length(max=Config.MAX_TEXT_LENGTH)  # ids, types, keys
LONG_TEXT = validate.Length(max=Config.MAX_VALUE_LENGTH)  # the `values` of key/value objects
LIST_SIZE = validate.Length(max=Config.MAX_LIST_LENGTH)

# The example values of the original API doc (docs/original-api.txt), which /openapi.json and
# /docs show in its place: every message in that doc reads like this.
EXAMPLE_TEXT = {"example": "text"}
EXAMPLE_INTEGER = {"example": 1}
EXAMPLE_BOOLEAN = {"example": True}
EXAMPLE_DATE_TIME = {"example": "2025-08-31T15:55:11.247Z"}


class Text(fields.String):
    """A string that PostgreSQL can store: no NUL character. (A lone surrogate never gets
    this far: the JSON parser refuses it.)"""

    default_error_messages = {"nul": "May not contain the NUL character."}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise self.make_error("nul")
        return text


class StrictBoolean(fields.Boolean):
    """JSON true or false only (marshmallow would also take "yes", 1, ...)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def format_date_time(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ`, in UTC."""
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


class UTCDateTime(fields.DateTime):
    """Read any ISO 8601 date-time (no offset means UTC); write `YYYY-MM-DDTHH:MM:SS.mmmZ`."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else format_date_time(value)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid", input=value, obj_type="datetime")
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            parsed = parsed.astimezone(timezone.utc)
        except (ValueError, OverflowError):
            raise self.make_error("invalid", input=value, obj_type="datetime") from None
        # Stored at the precision the API shows, as MongoDB did.
        return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


def nullable_text():
    return Text(allow_none=True, validate=SHORT_TEXT, metadata=EXAMPLE_TEXT)


def nullable_int32():
    return fields.Integer(allow_none=True, strict=True, validate=INT32, metadata=EXAMPLE_INTEGER)


def flag():
    return StrictBoolean(metadata=EXAMPLE_BOOLEAN)


class KeyValueSchema(Schema):
    """`{"keys", "values", "queryparam"}`; a key left out is null (or false)."""

    keys = Text(allow_none=True, load_default=None, validate=SHORT_TEXT, metadata=EXAMPLE_TEXT)
    values = Text(allow_none=True, load_default=None, validate=LONG_TEXT, metadata=EXAMPLE_TEXT)
    queryparam = StrictBoolean(load_default=False, metadata=EXAMPLE_BOOLEAN)


def nullable_key_value():
    return fields.Nested(KeyValueSchema, allow_none=True)


class MessageSchema(Schema):
    """An SMS message. No field is required: POST fills in defaults, PUT and PATCH change
    only the fields sent. `id` and `event_time` may be sent back and are ignored."""

    id = fields.String(dump_only=True, metadata={"example": "68b4707f2e5b5c1f0a8c9d01"})
    event_time = UTCDateTime(dump_only=True, metadata=EXAMPLE_DATE_TIME)
    communication_id = nullable_text()
    msg_type = nullable_int32()
    type = nullable_text()
    user_id = nullable_text()
    received_config_id = nullable_text()
    module_id = nullable_int32()
    ref_id = nullable_text()
    ref_display_id = nullable_text()
    is_system_gen = flag()
    imap_config_id = nullable_text()
    attachment_ids = fields.List(Text(validate=SHORT_TEXT), validate=LIST_SIZE,
                                 metadata={"example": []})
    created_by = nullable_text()
    organization = nullable_text()
    creation_time = UTCDateTime(allow_none=True, metadata=EXAMPLE_DATE_TIME)
    last_update_time = UTCDateTime(allow_none=True, metadata=EXAMPLE_DATE_TIME)
    is_deleted = flag()
    is_assignee_read = flag()
    message_read_map = fields.List(fields.Nested(KeyValueSchema), validate=LIST_SIZE)
    customer_id = nullable_text()
    customer_entity_id = nullable_text()
    is_description = flag()
    email_data = nullable_key_value()
    sms_data = nullable_key_value()
    api_data = nullable_key_value()
    beep_data = nullable_key_value()

    @pre_load
    def ignore_read_only_keys(self, data, **kwargs):
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in ("id", "event_time")}
        return data


def new_message_defaults() -> dict:
    """The contract's defaults of the writable fields, for a POST that does not send them
    (the view adds the times and the organization)."""
    return {
        name: [] if isinstance(field, fields.List) else
        False if isinstance(field, fields.Boolean) else None
        for name, field in MessageSchema._declared_fields.items() if not field.dump_only
    }


# The hot paths render messages without marshmallow's per-field machinery, but from the
# schema's own field list and types; tests hold it equal to `MessageSchema().dump()`.
MESSAGE_FIELDS = tuple(MessageSchema._declared_fields)
_DATE_TIME_FIELDS = tuple(
    name for name, field in MessageSchema._declared_fields.items() if isinstance(field, UTCDateTime)
)


def render_message(values: dict) -> dict:
    """A message's API object from its values (date-times as datetime, key/value objects as
    `{"keys", "values", "queryparam"}` dicts), with the schema's keys in the schema's order."""
    message = {name: values[name] for name in MESSAGE_FIELDS}
    for name in _DATE_TIME_FIELDS:
        if message[name] is not None:
            message[name] = format_date_time(message[name])
    return message


# --- List query parameters (Django REST framework style) ---------------------------------

RANGE_FILTER_FIELDS = ("creation_time", "last_update_time", "msg_type", "module_id")
RANGE_OPERATORS = {"gte": "≥", "gt": ">", "lte": "≤", "lt": "<"}
ORDERING_FIELDS = ("creation_time", "last_update_time", "event_time", "id", "msg_type", "module_id")


def _query_field(name: str, description: str) -> fields.Field:
    """The query-string twin of a message field: same type, but booleans read true/false."""
    field = MessageSchema._declared_fields[name]
    metadata = {"description": description}
    if isinstance(field, fields.Boolean):
        return fields.Boolean(metadata=metadata)
    if isinstance(field, UTCDateTime):
        return UTCDateTime(metadata=metadata)
    if isinstance(field, fields.Integer):
        return fields.Integer(strict=False, validate=INT32, metadata=metadata)
    return Text(metadata=metadata)


class Ordering(fields.String):
    """`ordering=field,-field`: returns [(field, descending), ...]."""

    default_error_messages = {"invalid_field": "Can't order by {name!r}; use one of: {choices}."}

    def _deserialize(self, value, attr, data, **kwargs):
        terms = []
        for term in super()._deserialize(value, attr, data, **kwargs).split(","):
            name = term.strip().removeprefix("-")
            if name not in ORDERING_FIELDS:
                raise self.make_error("invalid_field", name=name,
                                      choices=", ".join(ORDERING_FIELDS))
            terms.append((name, term.strip().startswith("-")))
        return terms


SCALAR_FILTER_FIELDS = tuple(
    name for name, field in MessageSchema._declared_fields.items()
    if not isinstance(field, (fields.List, fields.Nested))
)


class MessageListArgsSchema(Schema.from_dict(
    {name: _query_field(name, f"Messages whose `{name}` is this value.")
     for name in SCALAR_FILTER_FIELDS}
    | {f"{name}__{op}": _query_field(name, f"Messages whose `{name}` is {sign} this value.")
       for name in RANGE_FILTER_FIELDS for op, sign in RANGE_OPERATORS.items()}
)):
    """Filters: `field=value` (exact), `field__gte|gt|lte|lt=value` (ranges); `ordering`;
    page mode (`page`, `page_size`) or cursor mode (`cursor`, `page_size`). An empty value
    means no filter, as in django-filter."""

    class Meta:
        unknown = EXCLUDE

    ordering = Ordering(metadata={"description": (
        "Comma-separated fields, `-` for descending; default `-creation_time` (ties: by id). "
        "In cursor mode only `id` or `-id` (the default).")})
    page = fields.Integer(validate=validate.Range(min=1), metadata={
        "description": "Page number, from 1 (page mode; default 1)."})
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000),
                               metadata={"description": "Messages a page."})
    cursor = fields.String(metadata={"description": (
        "Cursor mode: `*` for the first page, then the `cursor` of the `Link: rel=\"next\"` "
        "URL. Messages come in id order (creation order), newest first unless "
        "`ordering=id`; a client that follows `next` until it is absent sees every message "
        "that existed when it started exactly once, even while new ones are created.")})

    @pre_load
    def drop_empty_values(self, data, **kwargs):
        return {k: v for k, v in data.items() if v != ""}
