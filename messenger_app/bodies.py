"""Request bodies, read as the original service's Django REST framework parsers read them:
JSON, `application/x-www-form-urlencoded` or `multipart/form-data`, each into one dict of
fields that the message schema then validates (and coerces) the same way.

Forms follow DRF's rules for HTML input (rest_framework/fields.py, utils/html.py): a list
from repeated keys (`attachment_ids=a&attachment_ids=b`) or, failing those, indexed keys
(`attachment_ids[0]=a`, `message_read_map[0]keys=k`), in index order; an object from dotted
keys (`email_data.keys=k`); the last value of a repeated key otherwise. An empty value is
null for a field that takes null, and is not sent at all for one that doesn't (a boolean).
Keys that name no field are kept as they are, so that the schema refuses them by name.
"""
import io
import re
from contextlib import suppress
from typing import Any

import orjson
from flask import current_app, g, request
from gunicorn.http.errors import ParseException
from marshmallow import Schema, fields
from marshmallow.experimental.context import Context
from webargs.flaskparser import FlaskParser
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from .api import abort

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
CONTENT_TYPES = ("application/json", *FORM_TYPES)


def body_fields(schema: Schema) -> dict:
    """The request's body as a dict of fields, read once per request: 415 for another
    content type, 400 for JSON that is not an object. An empty body stands for `{}`, as
    it did in the original service."""
    if "body_fields" not in g:
        g.body_fields = read_form(schema) if request.mimetype in FORM_TYPES else read_json()
    return g.body_fields


def fields_read() -> dict | None:
    """The body's fields if this request's view read them (DELETE's doesn't), else None."""
    return g.get("body_fields")


def raw_body() -> bytes:
    """The body's bytes, read once: 413 past MAX_CONTENT_LENGTH, which werkzeug checks
    against Content-Length but silently cuts a chunked body off at; 400 for a chunked body
    whose encoding is broken (gunicorn's reader raises a ParseException or an OSError)."""
    try:
        body = request.get_data(cache=True)
        limit = request.max_content_length
        if limit is not None and len(body) >= limit and request.content_length is None:
            if request.environ["wsgi.input"].read(1):  # more than werkzeug let through
                raise RequestEntityTooLarge()
    except RequestEntityTooLarge:
        discard_unread_body()
        raise
    except (OSError, ClientDisconnected, ParseException):
        abort(400, message="The body could not be read: its chunked encoding is broken.")
    return body


def discard_unread_body(most: int = 8 * 1024 * 1024) -> None:
    """Read and drop what is left of a refused body (up to `most` bytes), so that closing
    the connection does not reset it under the 413 a client is about to read."""
    with suppress(Exception):  # a broken or endless body: the connection closes regardless
        while most > 0 and (chunk := request.environ["wsgi.input"].read(min(most, 65536))):
            most -= len(chunk)


def read_json() -> dict:
    body = raw_body()
    if not body:
        return {}
    if not request.is_json:
        abort(415, message="The body must be application/json, "
                           "application/x-www-form-urlencoded or multipart/form-data.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        abort(400, message="The body is not valid JSON.")
    if not isinstance(data, dict):
        abort(400, message="The body must be a JSON object.")
    return data


def read_form(schema: Schema) -> dict:
    """A form's fields: 400 for a body that is not a form of its type (werkzeug would take
    it for an empty one). In a multipart body, a file stands where its field's value would,
    and is refused as a value of the wrong type."""
    body = raw_body()
    parser = request.make_form_data_parser()  # with the app's limits (413 past them)
    parser.silent = False
    try:
        _, values, files = parser.parse(io.BytesIO(body), request.mimetype, len(body),
                                        request.mimetype_params)
    except ValueError:
        abort(400, message=f"The body is not valid {request.mimetype}.")
    if None in values or None in files:  # a part whose name werkzeug can't read (a bare CR)
        abort(400, message=f"The body is not valid {request.mimetype}.")
    form: MultiDict[str, Any] = MultiDict(values)
    for name, upload in files.items(multi=True):
        form.add(name, upload)
    return fields_from_form(schema, form)


def fields_from_form(schema: Schema, form: MultiDict) -> dict:
    data: dict[str, Any] = {}
    claimed: set[str] = set()
    for name, field in schema.fields.items():
        if field.dump_only:
            continue
        if isinstance(field, fields.List):
            indexed = indexed_items(form, name)
            claimed |= {name, *indexed}
            if name in form:  # repeated keys win over indexed ones, as in DRF
                data[name] = form.getlist(name)
            elif indexed:
                data[name] = list_from_indexed(form, field.inner, indexed)
        elif isinstance(field, fields.Nested):
            dotted = [key for key in form if key.startswith(f"{name}.") and key != f"{name}."]
            claimed |= set(dotted)
            if dotted:
                data[name] = fields_from_form(field.schema, MultiDict(
                    (key.removeprefix(f"{name}."), value)
                    for key in dotted for value in form.getlist(key)))
        elif name in form:
            claimed.add(name)
            value = form.getlist(name)[-1]
            if value != "":
                data[name] = value
            elif field.allow_none:
                data[name] = None
    for key in form:
        if key not in claimed:
            data.setdefault(key, form.getlist(key)[-1])
    return data


def indexed_items(form: MultiDict, name: str) -> dict[str, tuple[int, str]]:
    """`name[N]rest` keys of the form: key -> (N, rest)."""
    pattern = re.compile(rf"{re.escape(name)}\[([0-9]+)\](.*)", re.DOTALL)
    return {key: (int(match[1]), match[2]) for key in form
            if (match := pattern.fullmatch(key))}


def list_from_indexed(form: MultiDict, inner: fields.Field,
                      indexed: dict[str, tuple[int, str]]) -> list:
    """DRF's parse_html_list: a `name[N]` key is an item, `name[N]key` keys make an object
    item; in index order, gaps closed."""
    items: dict[int, str | MultiDict] = {}
    for key, (index, rest) in indexed.items():
        value = form.getlist(key)[-1]
        if not rest:
            items[index] = value
        else:
            item = items.get(index)
            if not isinstance(item, MultiDict):
                item = items[index] = MultiDict()
            item[rest] = value
    return [item_from_form(inner, items[index]) for index in sorted(items)]


def item_from_form(inner: fields.Field, item):
    if not isinstance(item, MultiDict):
        return item
    if isinstance(inner, fields.Nested):
        return fields_from_form(inner.schema, item)
    return item.to_dict()  # keys where a value belongs: refused by the item's field


class BodyParser(FlaskParser):
    """webargs' parser for flask-smorest, with bodies read by `body_fields` (errors under
    `errors.json` whatever the body's type), and loaded in the app's config as marshmallow's
    Context (where schemas.ConfiguredLength finds the limits)."""

    def parse(self, *args, **kwargs):
        with Context(current_app.config):
            return super().parse(*args, **kwargs)

    def load_json(self, req, schema):
        return body_fields(schema)
