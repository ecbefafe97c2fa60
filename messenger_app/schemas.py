"""The message resource's marshmallow schemas: the contract's 27 keys, in order.

Values are read as the original service's Django REST framework fields read them
(rest_framework/fields.py, 3.15): strings trimmed and numbers taken as their text, integers
from `5`, `"5"` or `"5.0"`, booleans from DRF's spellings, in JSON bodies and forms alike."""
import copy
import re
from contextlib import suppress
from datetime import UTC, datetime, timedelta, timezone

from flask import current_app
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate
from marshmallow.experimental.context import Context

from .message_json import format_date_time

INT64 = validate.Range(min=-(2**63), max=2**63 - 1)  # MongoDB's integers


class ConfiguredLength(validate.Validator):
    """At most as many characters (or items) as the setting `setting` of the app at work
    allows: the schemas are shared, the limits are each app's (openapi.Api documents them).
    The settings are the load's marshmallow Context, where one is set (bodies.BodyParser
    sets the app's config once a request: through `current_app` on every string, they took
    a fifth of a message's load), else the app's config."""

    def __init__(self, setting: str):
        self.setting = setting

    def __call__(self, value):
        limit = (Context.get(None) or current_app.config)[self.setting]
        if len(value) > limit:  # validate.Length(max=limit), without making one per value
            raise ValidationError(validate.Length.message_max.format(max=limit))
        return value


# Strings in a B-tree index are kept short enough that an index entry always fits
# PostgreSQL's limit (see Config.MAX_INDEXED_TEXT_LENGTH); others may be long.
INDEXED_TEXT = ConfiguredLength("MAX_INDEXED_TEXT_LENGTH")
TEXT = ConfiguredLength("MAX_TEXT_LENGTH")
LIST_SIZE = ConfiguredLength("MAX_LIST_LENGTH")

# The example values of the original API doc (docs/original-api.txt), which /openapi.json and
# /docs show in its place: every message in that doc reads like this.
EXAMPLE_TEXT = {"example": "text"}
EXAMPLE_INTEGER = {"example": 1}
EXAMPLE_BOOLEAN = {"example": True}
EXAMPLE_DATE_TIME = {"example": "2025-08-31T15:55:11.247Z"}


class OneValidator(fields.Field):
    """A field with one validator at most, called as it is: marshmallow 4 makes a
    `validate.And` of a field's validators for every value it validates (a seventh of a
    message's load), to gather the errors of several."""

    def _validate(self, value):
        for validator in self.validators:
            validator(value)


class Text(OneValidator, fields.String):
    """DRF's CharField: a number is taken as its text (`5` is "5"), leading and trailing
    whitespace is trimmed (`str.strip()`); a boolean, list or object is refused. So is NUL,
    which PostgreSQL can't store. (A lone surrogate never gets this far: the JSON parser
    refuses it.) Unlike DRF, a blank string is accepted."""

    default_error_messages = {"nul": "May not contain the NUL character."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.make_error("invalid")
        text = str(value).strip()
        if "\x00" in text:
            raise self.make_error("nul")
        return text


class Integer(OneValidator, fields.Integer):
    """DRF's IntegerField: `5`, `"5"`, `"5.0"`, `5.0` (its text without a decimal point
    followed by zeros, read by Python's int()); not `"5.5"`, `"1e3"` or `true`."""

    DECIMAL_ZEROS = re.compile(r"\.0*\s*$")
    MAX_STRING_LENGTH = 1000  # DRF's guard against huge strings
    default_error_messages = {"too_long": "String value too large."}

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and len(value) > self.MAX_STRING_LENGTH:
            raise self.make_error("too_long")
        try:
            return int(self.DECIMAL_ZEROS.sub("", str(value)))
        except (ValueError, TypeError):
            raise self.make_error("invalid") from None


class Boolean(OneValidator, fields.Boolean):
    """DRF's BooleanField: `true`, `1` and the strings "true", "t", "yes", "y", "on", "1" in
    any case; their false twins ("false", "f", "no", "n", "off", "0", `0`, `0.0`)."""

    # In a set, True is 1, and False is 0 and 0.0.
    TRUE = {"t", "y", "yes", "true", "on", "1", True}
    FALSE = {"f", "n", "no", "false", "off", "0", False}

    def _deserialize(self, value, attr, data, **kwargs):
        key = value.lower() if isinstance(value, str) else value
        with suppress(TypeError):  # an unhashable value: a list or an object
            if key in self.TRUE:
                return True
            if key in self.FALSE:
                return False
        raise self.make_error("invalid", input=value)


# Django's parse_datetime, behind DRF's DateTimeField, also took what this matches when
# Python's fromisoformat does not: one-digit months, days and hours, a comma before the
# fraction, a space before the offset.
DJANGO_DATE_TIME = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})"
    r"[T ](?P<hour>\d{1,2}):(?P<minute>\d{1,2})"
    r"(?::(?P<second>\d{1,2})(?:[.,](?P<microsecond>\d{1,6})\d{0,6})?)?"
    r"\s*(?P<tzinfo>Z|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_date_time(text: str) -> datetime:
    """A date-time as Django read it (ValueError if it can't); naive means UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        match = DJANGO_DATE_TIME.match(text)
        if match is None:
            raise
        parts = match.groupdict()
        offset = parts.pop("tzinfo")
        parts["microsecond"] = (parts["microsecond"] or "0").ljust(6, "0")
        n = {name: int(value) for name, value in parts.items() if value}
        parsed = datetime(n["year"], n["month"], n["day"], n["hour"], n["minute"],
                          n.get("second", 0), n["microsecond"])
        if offset and offset != "Z":
            minutes = int(offset[1:3]) * 60 + (int(offset[-2:]) if len(offset) > 3 else 0)
            parsed = parsed.replace(tzinfo=timezone(timedelta(minutes=minutes * (
                -1 if offset[0] == "-" else 1))))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class UTCDateTime(OneValidator, fields.DateTime):
    """Read any ISO 8601 date-time (no offset means UTC); write `YYYY-MM-DDTHH:MM:SS.mmmZ`."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else format_date_time(value)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid", input=value, obj_type="datetime")
        try:
            parsed = parse_date_time(value).astimezone(UTC)
        except (ValueError, OverflowError):
            raise self.make_error("invalid", input=value, obj_type="datetime") from None
        # Stored at the precision the API shows, as MongoDB did.
        return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


def nullable_text():
    return Text(allow_none=True, validate=TEXT, metadata=EXAMPLE_TEXT)


def indexed_text():
    """A string in a B-tree index of the messages table: shorter (see INDEXED_TEXT)."""
    return Text(allow_none=True, validate=INDEXED_TEXT, metadata=EXAMPLE_TEXT)


def nullable_integer():
    return Integer(allow_none=True, validate=INT64, metadata={**EXAMPLE_INTEGER,
                                                              "format": "int64"})


def flag():
    return Boolean(metadata=EXAMPLE_BOOLEAN)


class KeyValueInputSchema(Schema):
    """`{"keys", "values", "queryparam"}` in a body; a key left out is null (`queryparam`:
    false)."""

    keys = Text(allow_none=True, validate=TEXT, metadata=EXAMPLE_TEXT)
    values = Text(allow_none=True, validate=TEXT, metadata=EXAMPLE_TEXT)
    queryparam = Boolean(metadata=EXAMPLE_BOOLEAN)

    @post_load
    def fill_in_defaults(self, data, **kwargs):
        return with_key_value_defaults(data)


def with_key_value_defaults(data: dict) -> dict:
    # Not as load_default: the document would show a default, which openapi-typescript
    # takes to mean that the key is required.
    return {"keys": None, "values": None, "queryparam": False, **data}


class KeyValue(fields.Nested):
    """A `KeyValueInputSchema` object. One whose keys are the schema's is loaded field by
    field, as the schema's load would (a sixth of the time of a message's load went to the
    six nested loads' bookkeeping); any other, or one with a value a field refuses, goes
    through the nested load, which says what is wrong and where. (The schema's only hook is
    its defaults, which this applies too: a hook added there must be added here.)"""

    def __init__(self, **kwargs):
        super().__init__(KeyValueInputSchema, **kwargs)

    def _deserialize(self, value, attr, data, partial=None, **kwargs):
        schema = self.schema
        if isinstance(value, dict) and value.keys() <= schema.fields.keys():
            try:
                loaded = {name: schema.fields[name].deserialize(item)
                          for name, item in value.items()}
            except ValidationError:
                pass
            else:
                return with_key_value_defaults(loaded)
        return super()._deserialize(value, attr, data, partial=partial, **kwargs)


def nullable_key_value():
    return KeyValue(allow_none=True)


class MessageInputSchema(Schema):
    """An SMS message in a request body. No field is required: POST fills in defaults, PUT
    and PATCH change only the fields sent. `id` and `event_time` may be sent back and are
    ignored."""

    id = fields.String(dump_only=True, metadata={"example": "68b4707f2e5b5c1f0a8c9d01"})
    event_time = UTCDateTime(dump_only=True, metadata=EXAMPLE_DATE_TIME)
    communication_id = indexed_text()
    msg_type = nullable_integer()
    type = nullable_text()
    user_id = indexed_text()
    received_config_id = nullable_text()
    module_id = nullable_integer()
    ref_id = indexed_text()
    ref_display_id = nullable_text()
    is_system_gen = flag()
    imap_config_id = nullable_text()
    attachment_ids = fields.List(Text(validate=TEXT), validate=LIST_SIZE,
                                 metadata={"example": []})
    created_by = nullable_text()
    organization = indexed_text()
    creation_time = UTCDateTime(allow_none=True, metadata=EXAMPLE_DATE_TIME)
    last_update_time = UTCDateTime(allow_none=True, metadata=EXAMPLE_DATE_TIME)
    is_deleted = flag()
    is_assignee_read = flag()
    message_read_map = fields.List(KeyValue(), validate=LIST_SIZE)
    customer_id = indexed_text()
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


def every_key_required(schema: type[Schema], name: str,
                       nested: type[Schema] | None = None) -> type[Schema]:
    """`schema` as every response carries it, for the document (the views render responses
    themselves: see message_json): all its keys, always, so each field is required;
    `nested` stands for the schema of its nested objects."""
    declared = {}
    for field_name, field in schema._declared_fields.items():
        field = copy.copy(field)
        field.required = True
        if isinstance(field, fields.List):
            field.inner = copy.copy(field.inner)
        inner = field.inner if isinstance(field, fields.List) else field
        if isinstance(inner, fields.Nested) and nested is not None:
            inner.nested = nested
        declared[field_name] = field
    return Schema.from_dict(declared, name=name)


KeyValueSchema = every_key_required(KeyValueInputSchema, "KeyValue")
MessageSchema = every_key_required(MessageInputSchema, "Message", nested=KeyValueSchema)


# --- List query parameters (Django REST framework style) ---------------------------------

RANGE_FILTER_FIELDS = ("creation_time", "last_update_time", "msg_type", "module_id")
RANGE_OPERATORS = {"gte": "≥", "gt": ">", "lte": "≤", "lt": "<"}
MAX_PAGE = 2**31 - 1  # its OFFSET must fit the database's integers, whatever the page size
ORDERING_FIELDS = ("creation_time", "last_update_time", "event_time", "id", "msg_type", "module_id")


def _query_field(name: str, description: str) -> fields.Field:
    """The query-string twin of a message field: the same type, read the same way."""
    field = MessageInputSchema._declared_fields[name]
    metadata = {"description": description}
    if isinstance(field, fields.Boolean):
        return Boolean(metadata=metadata)
    if isinstance(field, UTCDateTime):
        return UTCDateTime(metadata=metadata)
    if isinstance(field, fields.Integer):
        return Integer(validate=INT64, metadata={**metadata, "format": "int64"})
    if name == "id":
        return MessageIdText(metadata=metadata)
    return Text(metadata=metadata)


class MessageIdText(Text):
    """A message id, read in either case as in URLs (MongoDB's ObjectId parser did)."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).lower()


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


class FilterArgsSchema(Schema.from_dict(  # type: ignore[misc]  # fields made below
    {name: _query_field(name, f"Messages whose `{name}` is this value.")
     for name in SCALAR_FILTER_FIELDS}
    | {f"{name}__{op}": _query_field(name, f"Messages whose `{name}` is {sign} this value.")
       for name in RANGE_FILTER_FIELDS for op, sign in RANGE_OPERATORS.items()}
)):
    """Filters: `field=value` (exact), `field__gte|gt|lte|lt=value` (ranges). An empty
    value means no filter, as in django-filter."""

    class Meta:
        unknown = EXCLUDE

    EMPTY_IS_ABSENT = True  # drop_empty_values; the document says so (allowEmptyValue)

    @pre_load
    def drop_empty_values(self, data, **kwargs):
        return {k: v for k, v in data.items() if v != ""}


class MessageListArgsSchema(FilterArgsSchema):
    """Filters; `ordering`; page mode (`page`, `page_size`) or cursor mode (`cursor`,
    `page_size`)."""

    ordering = Ordering(metadata={"description": (
        "Comma-separated fields, `-` for descending (ties: by id). Default `id`: the order "
        "in which the messages were created, oldest first, as the original service listed "
        "them; `-id` or `-creation_time` for newest first. In cursor mode only `id` (the "
        "default) or `-id`.")})
    page = fields.Integer(validate=validate.Range(min=1, max=MAX_PAGE), metadata={
        "description": "Page number, from 1 (page mode; default 1)."})
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000),
                               metadata={"description": "Messages a page."})
    cursor = fields.String(metadata={"description": (
        "Cursor mode: `*` for the first page, then the `cursor` of the `Link: rel=\"next\"` "
        "URL. Messages come in id order (creation order), oldest first unless "
        "`ordering=-id`; a client that follows `next` until it is absent sees every message "
        "that existed when it started exactly once, even while new ones are created.")})


FILTER_PARAMETERS = tuple(FilterArgsSchema._declared_fields)
