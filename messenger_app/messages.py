"""The SMS messages resource: /ux/common/messenger/sms/ and /ux/common/messenger/sms/{id}/.

The views validate with the marshmallow schemas (which also document them) and answer with
messages that the database renders as JSON (message_json). Lists come in page mode
(`page`: X-Pagination and Link first/prev/next/last) or cursor mode (`cursor`: Link next
only, keyset on the immutable id), streamed as they are read."""
import base64
import binascii
import json
import re
from collections.abc import Generator
from itertools import chain
from typing import NoReturn
from urllib.parse import urlencode

import orjson
from flask import Response, current_app, request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import EXCLUDE, Schema
from marshmallow import fields as ma_fields
from werkzeug.routing import BaseConverter

from . import queries
from .api import abort, documented_errors
from .auth import authenticate, current_key, key_scope, require_organization_access
from .bodies import FORM_TYPES, BodyParser
from .db import db
from .idempotency import PARAMETER as IDEMPOTENCY_KEY
from .idempotency import REPLAYED_HEADER, write_once
from .message_json import encode, new_message
from .models import OBJECT_ID_PATTERN, new_object_id, utcnow
from .replicas import parse_lsn
from .schemas import MessageInputSchema, MessageListArgsSchema, MessageSchema

blp = Blueprint(
    "sms", __name__, url_prefix="/ux/common/messenger/sms", description="SMS messages."
)
blp.before_request(authenticate)


blp.ARGUMENTS_PARSER = BodyParser()
MESSAGE_SCHEMA = MessageInputSchema()  # an instance: webargs would build a class anew per request


class ObjectIdConverter(BaseConverter):
    """A message id in URLs, in either case (as MongoDB's ObjectId parser read them; ids are
    stored and shown in lower case); anything else does not match the route: a 404."""

    regex = "[0-9a-fA-F]{24}"

    def to_python(self, value: str) -> str:
        return value.lower()


CONSISTENCY_TOKEN = "Consistency-Token"
CONSISTENCY_COOKIE = "consistency_token"
CONSISTENCY_TOKEN_HEADER = {CONSISTENCY_TOKEN: {
    "description": "With read replicas configured: the database's position after this write. "
                   "Sent back on reads (or kept as the `consistency_token` cookie, which "
                   "this response also sets), it makes them see this write.",
    "schema": {"type": "string", "example": "0/16B3748"}}}
CONSISTENCY_TOKEN_DESCRIPTION = (
    "Optional, with read replicas: the `Consistency-Token` of the client's latest write (or "
    "its cookie): the read then sees that write. Without one, it sees every write older "
    "than DATABASE_REPLICA_MAX_LAG_SECONDS.")


class ConsistencyTokenSchema(Schema):
    """The list's header parameter (one message's is in its `parameters`)."""

    class Meta:
        unknown = EXCLUDE

    token = ma_fields.String(data_key=CONSISTENCY_TOKEN,
                             metadata={"description": CONSISTENCY_TOKEN_DESCRIPTION})


CONSISTENCY_TOKEN_PARAMETER = {
    "in": "header", "name": CONSISTENCY_TOKEN, "required": False, "schema": {"type": "string"},
    "description": CONSISTENCY_TOKEN_DESCRIPTION}
OBJECT_ID_PARAMETER = {"type": "string", "pattern": f"^{ObjectIdConverter.regex}$"}
ETAG_HEADER = {"ETag": {"description": "The message's version.", "schema": {"type": "string"}}}
WRITE_HEADERS = {**ETAG_HEADER, **REPLAYED_HEADER, **CONSISTENCY_TOKEN_HEADER}
IF_MATCH = {"in": "header", "name": "If-Match", "required": False, "schema": {"type": "string"},
            "description": "Optional: change only if the message still has this ETag (else 412)."}
IF_NONE_MATCH = {"in": "header", "name": "If-None-Match", "required": False,
                 "schema": {"type": "string"},
                 "description": "Optional: 304 if the message still has this ETag."}


BODY_DESCRIPTION = (
    "JSON, or a form (`application/x-www-form-urlencoded`, `multipart/form-data`), read as "
    "the original Django REST framework service read them: strings trimmed, a number taken "
    "as a string's text, `\"5\"` or `\"5.0\"` as an integer, `\"true\"`, `\"yes\"`, `\"on\"`, "
    "`\"1\"` (and their false twins) as booleans. No field is required, and no body at all "
    "stands for `{}`. In a form, a list is "
    "repeated keys (`attachment_ids=a&attachment_ids=b`) or indexed ones "
    "(`attachment_ids[0]=a`), a key/value object dotted keys (`email_data.keys=k`), a "
    "read-map entry `message_read_map[0]keys=k`; an empty value is null (or, for a boolean, "
    "not sent).")


def form_schema(converter) -> dict:
    """A message as form keys (see bodies.py), for the OpenAPI document: `converter`
    (apispec's) gives each field the schema it has in JSON."""
    properties = {}
    for name, field in MESSAGE_SCHEMA.fields.items():
        if field.dump_only:
            continue
        if isinstance(field, ma_fields.Nested):
            for key, inner in field.schema.fields.items():
                properties[f"{name}.{key}"] = converter.field2property(inner)
        elif isinstance(field, ma_fields.List) and isinstance(field.inner, ma_fields.Nested):
            for key, inner in field.inner.schema.fields.items():
                description = (f"`{key}` of the first entry of `{name}`; `{name}[1]{key}` of "
                               "the next, and so on.")
                properties[f"{name}[0]{key}"] = {**converter.field2property(inner),
                                                 "description": description}
        else:
            properties[name] = converter.field2property(field)
    return {"type": "object", "properties": properties}


def message_body(view):
    """A write's body, JSON or a form (one schema validates both), documented both ways."""
    form = {"schema": {"$ref": "#/components/schemas/MessageForm"}}
    view = blp.doc(requestBody={"content": dict.fromkeys(FORM_TYPES, form)})(view)
    return blp.arguments(MESSAGE_SCHEMA, description=BODY_DESCRIPTION, required=False)(view)


@blp.after_request
def add_consistency_token(response: Response) -> Response:
    """A write's position, for the client's next reads (see replicas.py)."""
    if request.method in ("POST", "PUT", "PATCH", "DELETE") and response.status_code < 300:
        position = db.write_position()
        if position is not None:
            response.headers[CONSISTENCY_TOKEN] = position
            response.set_cookie(CONSISTENCY_COOKIE, position, httponly=True, samesite="Lax",
                                secure=request.is_secure, path="/ux/",
                                max_age=consistency_cookie_seconds())
    return response


def consistency_cookie_seconds() -> int:
    """Past its max lag, any replica that serves reads has the write."""
    return max(5, int(2 * current_app.config["DATABASE_REPLICA_MAX_LAG_SECONDS"]))


def seen_position() -> int | None:
    """The WAL position a read must see: the client's consistency token, from the header or
    the cookie; one that can't be read asks for the primary."""
    token = request.headers.get(CONSISTENCY_TOKEN) or request.cookies.get(CONSISTENCY_COOKIE)
    if token is None:
        return None
    position = parse_lsn(token.strip())
    return UNREADABLE_POSITION if position is None else position


UNREADABLE_POSITION = 1 << 64  # past any replica's


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, mimetype="application/json")


def not_found() -> NoReturn:
    abort(404, message="No such message.")


ROW_VERSION = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() takes "²"


def etag(row_version: int) -> str:
    return f'"{row_version}"'


def if_match_versions() -> list[int] | None:
    """The row_versions an If-Match header accepts; None without one (or with `*`)."""
    if "If-Match" not in request.headers or request.if_match.star_tag:
        return None
    return [int(tag) for tag in request.if_match.as_set()
            if tag and ROW_VERSION.fullmatch(tag)]  # anything else can't match


def not_found_or_changed(message_id: str, versions: list[int] | None) -> NoReturn:
    """After a write matched no row: 412 if the message is there but If-Match failed."""
    if versions is not None and queries.read_message(db.connection(), message_id, key_scope()):
        abort(412, message="The message has changed since the ETag in If-Match.")
    not_found()


def update(message_id: str, fields: dict) -> Response:
    if "organization" in fields:
        require_organization_access(fields["organization"])
    fields.setdefault("last_update_time", utcnow())
    versions = if_match_versions()
    updated = queries.update_message(message_id, fields, key_scope(), versions)
    if updated is None:
        not_found_or_changed(message_id, versions)
    message, row_version = updated
    return json_response(message, headers={"ETag": etag(row_version)})


@blp.route("/")
class Messages(MethodView):
    @blp.arguments(MessageListArgsSchema(), location="query")
    @blp.response(200, MessageSchema(many=True), headers={
        "X-Pagination": {"description": (
            "Page mode: flask-smorest's pagination metadata as JSON. `total`, `total_pages` "
            "and `last_page` are left out when more than LIST_COUNT_LIMIT (10,000) messages "
            "match."), "schema": {"type": "string"}},
        "Link": {"description": (
            'RFC 8288 links: `first`, `prev`, `next`, `last` in page mode (where they exist); '
            '`next` alone in cursor mode, absent on the last page.'),
            "schema": {"type": "string"}},
    })
    @documented_errors(401, 422, 503)
    @blp.arguments(ConsistencyTokenSchema, location="headers", as_kwargs=True)
    @blp.doc(operationId="list_messages")
    def get(self, args, **_consistency_token):  # read by seen_position(), as for one message
        """List messages, filtered and ordered (oldest first unless asked).

        A parameter with an empty value (`?ref_id=`) is taken as absent: it filters
        nothing."""
        return list_response(args, key_scope())

    @message_body
    @blp.response(201, MessageSchema, headers={**WRITE_HEADERS, "Location": {
        "description": "The new message's URL.", "schema": {"type": "string"}}})
    @documented_errors(400, 401, 403, 409, 413, 415, 422, 503)
    @blp.doc(operationId="create_message", parameters=[IDEMPOTENCY_KEY])
    @write_once
    def post(self, fields):
        """Create a message; fields not sent get their defaults."""
        fields.setdefault("organization", current_key().organization)
        require_organization_access(fields["organization"])
        message = new_message(fields, utcnow(), new_object_id())
        queries.insert_message(message)
        return json_response(encode(message), 201, {"Location": message_url(message["id"]),
                                                     "ETag": etag(1)})


@blp.route("/<objectid:message_id>/")
class MessageItem(MethodView):
    @blp.response(200, MessageSchema, headers=ETAG_HEADER)
    @blp.alt_response(304, description="Not modified: `If-None-Match` has the ETag.",
                      headers=ETAG_HEADER)
    @documented_errors(401, 404, 503)
    @blp.doc(operationId="read_message", parameters=[IF_NONE_MATCH, CONSISTENCY_TOKEN_PARAMETER])
    def get(self, message_id):
        """Read one message."""
        found = db.read(lambda connection: queries.read_message(connection, message_id,
                                                                key_scope()), seen_position())
        if found is None:
            not_found()
        message, row_version = found
        tag = etag(row_version)
        if request.if_none_match.contains_weak(tag.strip('"')):
            return Response(status=304, headers={"ETag": tag})
        return json_response(message, headers={"ETag": tag})

    @message_body
    @blp.response(200, MessageSchema, headers=WRITE_HEADERS)
    @documented_errors(400, 401, 403, 404, 409, 412, 413, 415, 422, 503)
    @blp.doc(operationId="update_message", parameters=[IF_MATCH, IDEMPOTENCY_KEY])
    @write_once
    def put(self, fields, message_id):
        """Update the fields sent; the others keep their values (as in the original)."""
        return update(message_id, fields)

    @message_body
    @blp.response(200, MessageSchema, headers=WRITE_HEADERS)
    @documented_errors(400, 401, 403, 404, 409, 412, 413, 415, 422, 503)
    @blp.doc(operationId="partial_update_message", parameters=[IF_MATCH, IDEMPOTENCY_KEY])
    @write_once
    def patch(self, fields, message_id):
        """Update the fields sent; the others keep their values."""
        return update(message_id, fields)

    @blp.response(204, headers={**REPLAYED_HEADER, **CONSISTENCY_TOKEN_HEADER})
    @documented_errors(401, 404, 409, 412, 422, 503)
    @blp.doc(operationId="delete_message", parameters=[IF_MATCH, IDEMPOTENCY_KEY])
    @write_once
    def delete(self, message_id):
        """Delete a message with its attachment ids and key/value objects."""
        versions = if_match_versions()
        if not queries.delete_message(message_id, key_scope(), versions):
            not_found_or_changed(message_id, versions)
        return Response(status=204)


# --- Lists ----------------------------------------------------------------------------

CREATION_ORDER = [("id", False)]  # as the original listed its documents
CURSOR_START = "*"
OBJECT_ID = re.compile(OBJECT_ID_PATTERN)


def list_response(args: dict, organization: str | None) -> Response:
    filters = dict(args)
    page_size = filters.pop("page_size")
    page = filters.pop("page", None)
    cursor = filters.pop("cursor", None)
    ordering = filters.pop("ordering", None)
    if cursor is None:
        return numbered_page(filters, organization, ordering or CREATION_ORDER, page or 1,
                             page_size)
    if page is not None:
        abort(422, errors={"query": {"page": ["Use either page or cursor, not both."]}})
    return cursor_page(filters, organization, ordering, cursor, page_size)


def numbered_page(filters, organization, ordering, page: int, page_size: int) -> Response:
    if all(name != "id" for name, _ in ordering):
        ordering = [*ordering, ("id", ordering[0][1])]  # a total order: stable pages
    offset = (page - 1) * page_size
    count_limit = current_app.config["LIST_COUNT_LIMIT"]
    page_read, total = db.read(lambda connection: queries.read_page_and_count(
        connection, filters, organization, ordering, page_size, offset, count_limit),
        seen_position())
    if total is not None:
        metadata = Blueprint._make_pagination_metadata(page, page_size, total)
    else:
        metadata = {"first_page": 1, "page": page, "previous_page": page - 1,
                    "next_page": page + 1}
        if page == 1:
            del metadata["previous_page"]
    links = {"first": metadata.get("first_page"), "prev": metadata.get("previous_page"),
             "next": metadata.get("next_page"), "last": metadata.get("last_page")}
    headers = {"X-Pagination": json.dumps(metadata)}
    link = link_header({rel: {"page": n} for rel, n in links.items() if n})
    if link:
        headers["Link"] = link
    return json_array_response(page_read.messages, headers)


def cursor_page(filters, organization, ordering, cursor: str, page_size: int) -> Response:
    if ordering and (len(ordering) > 1 or ordering[0][0] != "id"):
        abort(422, errors={"query": {"ordering": ["Cursor mode orders by id or -id only."]}})
    descending = ordering[0][1] if ordering else False
    if cursor != CURSOR_START:
        filters[f"id__{'lt' if descending else 'gt'}"] = decode_cursor(cursor)
    page = db.read(lambda connection: queries.read_page(
        connection, filters, organization, [("id", descending)], page_size), seen_position())
    headers = {}
    if page.last_id is not None:  # more follow
        headers["Link"] = link_header({"next": {"cursor": encode_cursor(page.last_id)}})
    return json_array_response(page.messages, headers)


def json_array_response(messages: Generator[dict, None, None], headers: dict) -> Response:
    """A list's body: a JSON array, sent as its messages are read (in pieces of about
    64 KiB), so that a request's memory does not grow with its page. The request's
    connection, which reads them, is the response's from now on: closed with it."""
    connection = db.hand_over_connection()

    def pieces() -> Generator[bytes, None, None]:
        piece, size = [b"["], 1
        try:
            for n, message in enumerate(messages):
                encoded = orjson.dumps(message)
                piece.append(b"," + encoded if n else encoded)
                size += len(encoded) + 1
                if size >= PIECE_BYTES:
                    yield b"".join(piece)
                    piece, size = [], 0
        finally:  # read to the end, or given up
            messages.close()
            connection.close()
        piece.append(b"]")
        yield b"".join(piece)

    body = pieces()
    first = next(body)  # made before the answer starts: what fails in it is still a 500
    response = Response(chain([first], body), 200, headers, mimetype="application/json")
    response.call_on_close(body.close)  # read to the end or not: its stream, its connection
    return response


PIECE_BYTES = 64 * 1024


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        after = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["after"]
        if isinstance(after, str) and OBJECT_ID.fullmatch(after):
            return after
    except (binascii.Error, ValueError, TypeError, KeyError):
        pass
    abort(422, errors={"query": {"cursor": ["Not a cursor from a Link header, nor `*`."]}})


def link_header(pages: dict[str, dict], endpoint: str = "sms.Messages") -> str:
    """RFC 8288 links to this list (of `endpoint`) with some query parameters replaced, by
    relation."""
    base = public_url(endpoint)
    links = []
    for rel, replaced in pages.items():
        params = [(k, v) for k, v in request.args.items(multi=True) if k not in replaced]
        links.append(f'<{base}?{urlencode([*params, *replaced.items()])}>; rel="{rel}"')
    return ", ".join(links)


def public_url(endpoint: str, **values) -> str:
    """A URL of this service for a client: PUBLIC_BASE_URL and the path, or the path alone
    (relative) without it; never built from the request's Host, which the client chooses
    (a Link to `Host: evil.example` would send the next request, key and all, there)."""
    return public_base_url() + url_for(endpoint, **values)


def message_url(message_id: str) -> str:
    """`public_url("sms.MessageItem", message_id=message_id)`, put together without
    werkzeug's URL builder, which took 6% of a POST's time: an id has nothing to quote."""
    return public_base_url() + request.script_root + f"{blp.url_prefix}/{message_id}/"


def public_base_url() -> str:
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/")
