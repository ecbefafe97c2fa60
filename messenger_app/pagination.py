"""List responses: page mode (`page`: X-Pagination and Link first/prev/next/last) and cursor
mode (`cursor`: Link next only, keyset on the immutable id)."""
import base64
import binascii
import json
import re
from collections.abc import Iterator
from itertools import chain
from urllib.parse import urlencode

import orjson
from flask import Response, current_app, request, url_for
from flask_smorest import Blueprint, abort

from . import message_queries as queries
from .extensions import db
from .models import OBJECT_ID_PATTERN

CREATION_ORDER = [("id", False)]  # as the original listed its documents
CURSOR_START = "*"
OBJECT_ID = re.compile(OBJECT_ID_PATTERN)


def page_response(args: dict, organization: str | None) -> Response:
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
    # Counting all matches would cost more than the page itself on a large table, so the
    # count stops past this page and past LIST_COUNT_LIMIT; beyond, no total is given.
    enough = max(current_app.config["LIST_COUNT_LIMIT"], offset + page_size)
    page_read, counted = page_and_count(filters, organization, ordering, offset, page_size,
                                        enough)
    if counted <= enough:
        metadata = Blueprint._make_pagination_metadata(page, page_size, counted)
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


def page_and_count(filters, organization, ordering, offset: int, page_size: int,
                   enough: int) -> tuple[queries.Page, int]:
    """A page, and how many messages match, counted up to `enough` + 1. Within
    LIST_COUNT_LIMIT the page's statement counts too. Past it, the page (read with one
    message more) tells: when the list ends on it, that gives the count, and when more
    follow, that they pass `enough`; only a page past the end has a count to make."""
    connection = db.connection()
    shallow = offset + page_size < current_app.config["LIST_COUNT_LIMIT"]
    page = queries.read_page(connection, filters, organization, ordering, page_size, offset,
                             enough + 1 if shallow else None)
    if page.matches is not None:
        return page, page.matches
    if page.more:
        return page, enough + 1
    if page.rows or not offset:
        return page, offset + page.rows
    return page, queries.count_messages(connection, filters, organization, enough + 1)


def cursor_page(filters, organization, ordering, cursor: str, page_size: int) -> Response:
    if ordering and (len(ordering) > 1 or ordering[0][0] != "id"):
        abort(422, errors={"query": {"ordering": ["Cursor mode orders by id or -id only."]}})
    descending = ordering[0][1] if ordering else False
    if cursor != CURSOR_START:
        filters[f"id__{'lt' if descending else 'gt'}"] = decode_cursor(cursor)
    page = queries.read_page(db.connection(), filters, organization, [("id", descending)],
                             page_size)
    headers = {}
    if page.more:
        headers["Link"] = link_header({"next": {"cursor": encode_cursor(page.last_id)}})
    return json_array_response(page.messages, headers)


def json_array_response(messages: Iterator[dict], headers: dict) -> Response:
    """A list's body: a JSON array, sent as its messages are read (in pieces of about
    64 KiB), so that a request's memory does not grow with its page. The request's
    connection, which reads them, is the response's from now on: closed with it."""
    connection = db.hand_over_connection()

    def pieces() -> Iterator[bytes]:
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


def link_header(pages: dict[str, dict]) -> str:
    """RFC 8288 links to this list with some query parameters replaced, by relation."""
    base = public_url(request.endpoint)
    links = []
    for rel, replaced in pages.items():
        params = [(k, v) for k, v in request.args.items(multi=True) if k not in replaced]
        links.append(f'<{base}?{urlencode([*params, *replaced.items()])}>; rel="{rel}"')
    return ", ".join(links)


def public_url(endpoint: str, **values) -> str:
    """A URL of this service for a client: PUBLIC_BASE_URL and the path, or the path alone
    (relative) without it; never built from the request's Host, which the client chooses
    (a Link to `Host: evil.example` would send the next request, key and all, there)."""
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + url_for(endpoint, **values)
