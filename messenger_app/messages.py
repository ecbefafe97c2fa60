"""The SMS messages resource: /ux/common/messenger/sms/ and /ux/common/messenger/sms/{id}/.

The views validate with the marshmallow schemas (which also document them) and answer with
messages rendered straight from SQL rows (see message_queries)."""
import re
from http import HTTPStatus

import orjson
from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import fields as ma_fields
from werkzeug.routing import BaseConverter

from . import message_queries as queries
from .auth import authenticate, current_key, require_organization_access
from .bodies import FORM_TYPES, BodyParser
from .extensions import db
from .idempotency import REPLAYED_HEADER, idempotent
from .idempotency import PARAMETER as IDEMPOTENCY_KEY
from .models import new_object_id, utcnow
from .pagination import page_response, public_url
from .schemas import (
    MessageInputSchema, MessageListArgsSchema, MessageSchema, new_message_defaults,
    render_message,
)

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


OBJECT_ID_PARAMETER = {"type": "string", "pattern": f"^{ObjectIdConverter.regex}$"}
ETAG_HEADER = {"ETag": {"description": "The message's version.", "schema": {"type": "string"}}}
WRITE_HEADERS = {**ETAG_HEADER, **REPLAYED_HEADER}
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


def errors(*codes: int):
    """Document the errors an operation can give (described in openapi.ERROR_RESPONSES)."""

    def document(view):
        for code in codes:
            view = blp.alt_response(code, response=HTTPStatus(code).name)(view)
        return view

    return document


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, mimetype="application/json")


def not_found():
    abort(404, message="No such message.")


def key_scope() -> str | None:
    """The organization the current key is limited to; None for an all-organizations key."""
    key = current_key()
    return None if key.all_organizations else key.organization


ROW_VERSION = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() takes "²"


def etag(row_version: int) -> str:
    return f'"{row_version}"'


def if_match_versions() -> list[int] | None:
    """The row_versions an If-Match header accepts; None without one (or with `*`)."""
    if "If-Match" not in request.headers or request.if_match.star_tag:
        return None
    return [int(tag) for tag in request.if_match.as_set()
            if tag and ROW_VERSION.fullmatch(tag)]  # anything else can't match


def not_found_or_changed(message_id: str, versions: list[int] | None):
    """After a write matched no row: 412 if the message is there but If-Match failed."""
    if versions is not None and queries.read_message(db.connection(), message_id, key_scope()):
        abort(412, message="The message has changed since the ETag in If-Match.")
    not_found()


def update(message_id: str, fields: dict) -> Response:
    if "organization" in fields:
        require_organization_access(fields["organization"])
    fields.setdefault("last_update_time", utcnow())
    versions = if_match_versions()
    updated = queries.update_message(db.connection(), message_id, fields, key_scope(), versions)
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
    @errors(401, 422, 503)
    @blp.doc(operationId="list_messages")
    def get(self, args):
        """List messages, filtered and ordered (oldest first unless asked).

        A parameter with an empty value (`?ref_id=`) is taken as absent: it filters
        nothing."""
        return page_response(args, key_scope())

    @message_body
    @blp.response(201, MessageSchema, headers={**WRITE_HEADERS, "Location": {
        "description": "The new message's URL.", "schema": {"type": "string"}}})
    @errors(400, 401, 403, 409, 413, 415, 422, 503)
    @blp.doc(operationId="create_message", parameters=[IDEMPOTENCY_KEY])
    @idempotent
    def post(self, fields):
        """Create a message; fields not sent get their defaults."""
        fields.setdefault("organization", current_key().organization)
        require_organization_access(fields["organization"])
        now = utcnow()
        message = {**new_message_defaults(), "creation_time": now, "last_update_time": now,
                   **fields, "id": new_object_id(), "event_time": now}
        queries.insert_message(db.connection(), message)
        location = public_url("sms.MessageItem", message_id=message["id"])
        return json_response(render_message(message), 201,
                             {"Location": location, "ETag": etag(1)})


@blp.route("/<objectid:message_id>/")
class MessageItem(MethodView):
    @blp.response(200, MessageSchema, headers=ETAG_HEADER)
    @blp.alt_response(304, description="Not modified: `If-None-Match` has the ETag.",
                      headers=ETAG_HEADER)
    @errors(401, 404, 503)
    @blp.doc(operationId="read_message", parameters=[IF_NONE_MATCH])
    def get(self, message_id):
        """Read one message."""
        found = queries.read_message(db.connection(), message_id, key_scope())
        if found is None:
            not_found()
        message, row_version = found
        tag = etag(row_version)
        if request.if_none_match.contains_weak(tag.strip('"')):
            return Response(status=304, headers={"ETag": tag})
        return json_response(message, headers={"ETag": tag})

    @message_body
    @blp.response(200, MessageSchema, headers=WRITE_HEADERS)
    @errors(400, 401, 403, 404, 409, 412, 413, 415, 422, 503)
    @blp.doc(operationId="update_message", parameters=[IF_MATCH, IDEMPOTENCY_KEY])
    @idempotent
    def put(self, fields, message_id):
        """Update the fields sent; the others keep their values (as in the original)."""
        return update(message_id, fields)

    @message_body
    @blp.response(200, MessageSchema, headers=WRITE_HEADERS)
    @errors(400, 401, 403, 404, 409, 412, 413, 415, 422, 503)
    @blp.doc(operationId="partial_update_message", parameters=[IF_MATCH, IDEMPOTENCY_KEY])
    @idempotent
    def patch(self, fields, message_id):
        """Update the fields sent; the others keep their values."""
        return update(message_id, fields)

    @blp.response(204, headers=REPLAYED_HEADER)
    @errors(401, 404, 409, 412, 422, 503)
    @blp.doc(operationId="delete_message", parameters=[IF_MATCH, IDEMPOTENCY_KEY])
    @idempotent
    def delete(self, message_id):
        """Delete a message with its attachment ids and key/value objects."""
        versions = if_match_versions()
        if not queries.delete_message(db.connection(), message_id, key_scope(), versions):
            not_found_or_changed(message_id, versions)
        return Response(status=204)
