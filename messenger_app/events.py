"""Live updates: GET /ux/common/messenger/sms/events/, the feed of changes to messages
(README, "Live updates"): Server-Sent Events with `Accept: text/event-stream`, pages of JSON
otherwise. Cursors are the events' positions (outbox.py), 32 hex digits: opaque to
clients, and increasing."""
import re
from time import monotonic

import orjson
from flask import Response, current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from . import live, outbox, queries
from .api import abort, documented_errors
from .auth import authenticate, key_scope, secret_from_header
from .db import db
from .messages import json_response, link_header
from .outbox import Position
from .schemas import FILTER_PARAMETERS, FilterArgsSchema, MessageSchema

blp = Blueprint("events", __name__, url_prefix="/ux/common/messenger/sms/events",
                description="Live updates: changes to messages, as they are made.")
blp.before_request(authenticate)


@blp.after_request
def not_stored(response: Response) -> Response:
    """The feed moves on: no answer of it (a 410 included, which caches may keep, and which
    a browser then gave a resuming reader with another Last-Event-ID) is to be kept."""
    response.headers["Cache-Control"] = "no-store"
    return response


CURSOR = re.compile("[0-9a-f]{32}")
KINDS = ("created", "updated", "deleted")
RETRY_MILLISECONDS = 2000  # how soon EventSource reconnects after a stream ends
KEY_CHECK_SECONDS = 1.0  # a revoked key's streams end this long after, at the most
HEARTBEAT = b": keep-alive\n\n"
LAST_EVENT_ID = "Last-Event-ID"
CURSOR_DESCRIPTION = "An event's `event_id` (the `id:` of a Server-Sent Event)"


class EventArgsSchema(FilterArgsSchema):
    """The list's filters (on the message after each change), and where to start."""

    last_event_id = fields.String(metadata={"description": (
        f"Server-Sent Events: {CURSOR_DESCRIPTION}; the stream starts after it (the "
        "`Last-Event-ID` header, which EventSource sends when it reconnects, wins). Without "
        "either, it starts at the present.")})
    after = fields.String(metadata={"description": (
        f"JSON: {CURSOR_DESCRIPTION}; the page starts after it. Without it, at the oldest "
        "event kept.")})
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000),
                               metadata={"description": "JSON: events a page, at most."})
    wait = fields.Float(load_default=0, validate=validate.Range(min=0, max=30), metadata={
        "description": "JSON: seconds to hold an empty page open until an event comes."})


class EventSchema(Schema):
    """One change to a message, as the JSON form gives it."""

    event_id = fields.String(required=True, metadata={
        "description": "The event's cursor: `after` it for the next ones.",
        "example": "00000000000002f1000000000000001a"})
    event = fields.String(required=True, validate=validate.OneOf(KINDS), metadata={
        "description": "What happened to the message, as this key sees it: a message moved "
                       "into the key's organization is `created`, one moved out `deleted`."})
    id = fields.String(required=True, metadata={"description": "The message's id.",
                                                "example": "68b4707f2e5b5c1f0a8c9d01"})
    message = fields.Nested(MessageSchema, metadata={
        "description": "The message as GET returns it after the change (not for deleted)."})


LAST_EVENT_ID_PARAMETER = {
    "in": "header", "name": LAST_EVENT_ID, "required": False, "schema": {"type": "string"},
    "description": f"Server-Sent Events: {CURSOR_DESCRIPTION}, as EventSource sends it when "
                   "it reconnects: the stream resumes after it."}
EVENT_STREAM = {"text/event-stream": {"schema": {"type": "string"}, "example": (
    'id: 00000000000002f1000000000000001a\nevent: created\ndata: {"id": '
    '"68b4707f2e5b5c1f0a8c9d01", "message": {...}}\n\n: keep-alive\n\n')}}


def encode_cursor(position: Position) -> str:
    return f"{position[0]:016x}{position[1]:016x}"


def decode_cursor(cursor: str, where: str, name: str) -> Position:
    """The position of an event's cursor; 422 naming `name` if it is none, 410 if the feed
    no longer keeps what follows it."""
    if not CURSOR.fullmatch(cursor):
        abort(422, errors={where: {name: ["Not a cursor of this feed (an event's id)."]}})
    position = int(cursor[:16], 16), int(cursor[16:], 16)
    oldest = outbox.oldest(db.connection())
    if oldest is not None and position < oldest:
        abort(410, message="This cursor is older than the events kept; list the messages "
                           "again, then follow from the present.")
    return position


@blp.route("/")
class Events(MethodView):
    @blp.arguments(EventArgsSchema(), location="query")
    @blp.response(200, EventSchema(many=True), headers={"Link": {
        "description": 'JSON: `rel="next"`, the next page (after the last event read).',
        "schema": {"type": "string"}}})
    @documented_errors(401, 410, 422, 503)
    @blp.doc(operationId="list_events", parameters=[LAST_EVENT_ID_PARAMETER],
             responses={200: {"content": EVENT_STREAM}})
    def get(self, args):
        """Follow changes to messages: Server-Sent Events or pages of JSON.

        With `Accept: text/event-stream`, a stream of Server-Sent Events (`id:` the
        cursor, `event:` created, updated or deleted, `data:` `{"id", "message"}`, no
        `message` for deleted) that never ends on its own, with a comment line after each
        quiet EVENTS_HEARTBEAT_SECONDS (15). Otherwise a JSON array of events after `after`,
        with `Link: rel="next"`. Either way, every change once, in one order for every
        client; an organization's key sees its organization's changes only. Filters apply
        to the message after each change; a deletion passes every filter."""
        filters = {name: value for name, value in args.items() if name in FILTER_PARAMETERS}
        feed = current_app.extensions["live_feed"]
        if request.accept_mimetypes.best_match(["application/json", "text/event-stream"]
                                               ) == "text/event-stream":
            return stream(feed, stream_start(args), filters)
        after = outbox.ORIGIN if "after" not in args else decode_cursor(args["after"], "query",
                                                                         "after")
        return page(feed, after, filters, args["page_size"], args["wait"])


def stream_start(args: dict) -> Position:
    header = request.headers.get(LAST_EVENT_ID)
    if header:
        return decode_cursor(header.strip(), "headers", LAST_EVENT_ID)
    if "last_event_id" in args:
        return decode_cursor(args["last_event_id"], "query", "last_event_id")
    return outbox.newest(db.connection())  # the present


def stream(feed: live.Feed, after: Position, filters: dict) -> Response:
    """The Server-Sent Events after `after`. Its first line goes out at once (and the
    headers with it); the request's connection is given back before (teardown), and the
    stream reads with none between its reads."""
    config = current_app.config
    client = request.environ.get("gunicorn.socket")
    if client is not None:  # a client that stops reading: gunicorn's write gives up, and drops it
        client.settimeout(config["EVENTS_WRITE_TIMEOUT_SECONDS"])
    deliveries = feed.follow(after, key_scope(), queries.matcher(filters),
                             config["EVENTS_HEARTBEAT_SECONDS"])
    key_valid = key_check(request.headers.get("Authorization", ""))

    def lines():
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        checked = monotonic()
        for batch in deliveries:  # one write for the events that came together
            if monotonic() - checked >= KEY_CHECK_SECONDS:
                if not key_valid():  # revoked: the client's reconnection gets a 401
                    deliveries.close()
                    return
                checked = monotonic()
            yield b"".join(map(server_sent_event, batch)) if batch else HEARTBEAT

    return Response(lines(), mimetype="text/event-stream",
                    headers={"X-Accel-Buffering": "no"})


def key_check(authorization: str):
    """Whether the stream's key is still valid, asked after the request (the key cache
    learns of a revocation at once on PostgreSQL; elsewhere it asks the database)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy's app
    secret = secret_from_header(authorization)

    def key_valid() -> bool:
        with app.app_context():
            return secret is not None and (
                app.extensions["api_key_cache"].lookup(secret) is not None)

    return key_valid


def server_sent_event(delivery: live.Delivery) -> bytes:
    """The event's lines, encoded once for every stream that sees it as this kind."""
    encoded = delivery.change.encoded.get(delivery.kind)
    if encoded is None:
        data: dict[str, object] = {"id": delivery.message_id}
        if delivery.message is not None:
            data["message"] = delivery.message
        encoded = delivery.change.encoded[delivery.kind] = b"id: %s\nevent: %s\ndata: %s\n\n" % (
            encode_cursor(delivery.position).encode(), delivery.kind.encode(), orjson.dumps(data))
    return encoded


def page(feed: live.Feed, after: Position, filters: dict, page_size: int,
         wait: float) -> Response:
    """The events after `after`, up to `page_size`; none yet: wait up to `wait` seconds
    for some, without a connection of the pool."""
    matches, scope = queries.matcher(filters), key_scope()
    deadline = monotonic() + wait
    while True:
        changed = feed.signal(scope)  # before reading: what is added after it sets it
        found, after, more = live.read_matching(db.connection(), after, scope, matches,
                                                page_size)
        if found or (not more and monotonic() >= deadline):
            break
        if not more:
            db.release()
            feed.wait(changed, deadline - monotonic())
    body = [{"event_id": encode_cursor(delivery.position), "event": delivery.kind,
             "id": delivery.message_id,
             **({} if delivery.message is None else {"message": delivery.message})}
            for delivery in found]
    headers = {"Link": link_header({"next": {"after": encode_cursor(after)}}, "events.Events")}
    return json_response(body, headers=headers)
