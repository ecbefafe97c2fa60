"""Safe retries: a write sent with an `Idempotency-Key` header is applied at most once.

The first request with a key claims it: a row `in_flight`, committed at once, so that a
repeat arriving meanwhile sees it (409, retry later). The write then runs in a transaction
that also turns the row `done` with the response, so the write and its record commit
together or not at all. A repeat of the same request (method, path, body as parsed JSON)
gets the stored response again, byte for byte, with `Idempotent-Replayed: true`; another
request with the key is a 422. Only successes are stored: after a 4xx or 5xx the claim is
deleted, so a retry runs afresh. A claim left in flight by a crashed worker may be claimed
again after IDEMPOTENCY_STALE_SECONDS; its first owner, if still running, then can't mark
it done, and its write is rolled back (409).

Keys belong to the API key's organization (`org:<organization>`: every key of one
organization shares them) or, for an all-organizations key, to that key
(`key:<api_keys.id>`). They expire after IDEMPOTENCY_TTL_SECONDS: an expired key is free
again at once, and every claim deletes up to PURGE_BATCH expired rows (on PostgreSQL in
the claim's own statement); `flask --app wsgi idempotency purge` deletes them all.
Without the header, none of this runs: no SQL is added.

`write_once` decorates every write view: it runs the view as the request's write
(`db.write()`), with or without a key."""
import functools
import hashlib
import logging
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import NoReturn

import orjson
from flask import Response, current_app, request
from sqlalchemy import Connection, and_, bindparam, delete, not_, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from . import bodies
from .api import abort
from .auth import current_key, key_scope
from .db import db
from .models import idempotency_keys as keys

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
ACCEPTABLE = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, no spaces
STORED_HEADERS = ("Content-Type", "Location", "ETag")
PURGE_BATCH = 100
CLAIM_ATTEMPTS = 3

# For the OpenAPI document of the write operations.
PARAMETER = {
    "in": "header", "name": HEADER, "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
    "description": (
        "Optional: 1 to 255 visible ASCII characters (a UUID, say), new for each new write. "
        "A retry with the same key and the same request (method, path, JSON body) is not "
        "applied again: it gets the first response, with `Idempotent-Replayed: true` (for 24 "
        "hours, IDEMPOTENCY_TTL_SECONDS). The same key with another request: 422; while the "
        "first is still running: 409 (retry after `Retry-After`). Failures (4xx, 5xx) are not "
        "stored: a retry runs afresh. Keys are per organization (per key for an "
        "all-organizations key)."),
}
REPLAYED_HEADER = {REPLAYED: {
    "description": "`true` on the stored response to an earlier request with the same "
                   "Idempotency-Key (nothing was applied this time); absent otherwise.",
    "schema": {"type": "string", "enum": ["true"]}}}

SAME_KEY = and_(keys.c.scope == bindparam("owner"), keys.c.idempotency_key == bindparam("key"))
OURS = and_(SAME_KEY, keys.c.created_at == bindparam("claimed_at"))
# Bound parameter names differ from column names: SQLAlchemy would take those for values.
PURGE = delete(keys).where(tuple_(keys.c.scope, keys.c.idempotency_key).in_(
    select(keys.c.scope, keys.c.idempotency_key)
    .where(keys.c.expires_at <= bindparam("now"), not_(SAME_KEY))  # the claim's own: reclaimed
    .order_by(keys.c.expires_at)  # oldest first, and by the index (not a scan of the table)
    .limit(PURGE_BATCH)
    .with_for_update(skip_locked=True)))  # PostgreSQL: claims never wait on one another
READ = select(keys.c.request_method, keys.c.request_path, keys.c.body_digest, keys.c.state,
              keys.c.response_status, keys.c.response_headers, keys.c.response_body
              ).where(SAME_KEY)
MARK_DONE = update(keys).where(OURS, keys.c.state == "in_flight").values(
    state="done", response_status=bindparam("status"),
    response_headers=bindparam("stored_headers"), response_body=bindparam("stored_body"))
RELEASE = delete(keys).where(OURS)


def now() -> datetime:
    """The time claims are made and compared at, to the microsecond (it names a claim)."""
    return datetime.now(UTC)


@cache
def claim_statement(dialect: str):
    """INSERT the claim; over an expired row or a stale claim, take it over; RETURNING a
    row only if the claim is ours. On PostgreSQL, expired rows are purged in the same
    statement (a data-modifying CTE)."""
    insert = postgresql.insert(keys) if dialect == "postgresql" else sqlite.insert(keys)
    statement = insert.values(
        scope=bindparam("owner"), idempotency_key=bindparam("key"),
        request_method=bindparam("method"), request_path=bindparam("path"),
        body_digest=bindparam("digest"), state="in_flight", created_at=bindparam("now"),
        expires_at=bindparam("expires"))
    taken_over = ("request_method", "request_path", "body_digest", "state", "created_at",
                  "expires_at")
    upsert = statement.on_conflict_do_update(
        index_elements=[keys.c.scope, keys.c.idempotency_key],
        set_={**{name: statement.excluded[name] for name in taken_over},
              "response_status": None, "response_headers": None, "response_body": None},
        where=or_(keys.c.expires_at <= bindparam("now"),
                  and_(keys.c.state == "in_flight",
                       keys.c.created_at <= bindparam("stale_before"))),
    ).returning(keys.c.created_at)
    if dialect == "postgresql":
        return upsert.add_cte(PURGE.cte("expired"))
    return upsert


def write_once(view):
    """Decorates a write view that returns a Response, inside its argument parsing (so an
    invalid body is refused before any claim): it runs as the request's write, which
    commits once, when it returns (db.write); with an Idempotency-Key, at most once."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            with db.write():
                return view(*args, **kwargs)
        if not ACCEPTABLE.fullmatch(key):
            abort(422, message=f"{HEADER} must be 1 to 255 visible ASCII characters.",
                  errors={"headers": {HEADER: ["1 to 255 visible ASCII characters."]}})
        params = {"owner": owner(), "key": key, "method": request.method,
                  "path": request.path, "digest": body_digest()}
        connection = db.connection()
        for _ in range(CLAIM_ATTEMPTS):  # again if the row went between claim and read
            claimed_at = claim(connection, params)
            if claimed_at is not None:
                return run_claimed({**params, "claimed_at": claimed_at}, view, args, kwargs)
            stored = connection.execute(READ, params).first()
            if stored is not None:
                return answer_repeat(stored, params)
        still_running()

    return wrapper


def owner() -> str:
    """Whose keys these are: the key's organization's, or an all-organizations key's own."""
    scope = key_scope()
    return f"key:{current_key().id}" if scope is None else f"org:{scope}"


def body_digest() -> str:
    """SHA-256 of the body's fields as canonical JSON: the same fields, however the JSON is
    spaced or its keys ordered (or, in a form, whatever multipart boundary a retry picks),
    have the same digest. A body that the view does not read (DELETE's) counts by its bytes."""
    fields = bodies.fields_read()
    if fields is None:
        canonical = bodies.raw_body()
    else:
        canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def claim(connection: Connection, params: dict) -> datetime | None:
    """Claim the key; its claim time if this request owns it now, else None."""
    claimed_at = now()
    config = current_app.config
    values = {**params, "now": claimed_at,
              "expires": claimed_at + timedelta(seconds=config["IDEMPOTENCY_TTL_SECONDS"]),
              "stale_before": claimed_at - timedelta(seconds=config["IDEMPOTENCY_STALE_SECONDS"])}
    if connection.dialect.name != "postgresql":
        connection.execute(PURGE, values)
    owned = connection.execute(claim_statement(connection.dialect.name), values).first()
    return None if owned is None else claimed_at


class ClaimLost(Exception):
    """The claim was taken over as stale while this request ran."""


def run_claimed(params: dict, view, args, kwargs) -> Response:
    """Run the view and store a success with it, in one transaction (the write's); else
    free the key."""
    stored = False
    try:
        with db.write():
            connection = db.atomic()  # the view's statements, then the record: one commit
            response = view(*args, **kwargs)
            if 200 <= response.status_code < 300:
                if not store(connection, params, response):
                    raise ClaimLost
                stored = True
    except ClaimLost:
        still_running()
    except BaseException:
        release(params)
        raise
    if not stored:
        release(params)
    return response


def store(connection: Connection, params: dict, response: Response) -> bool:
    headers = {name: response.headers[name] for name in STORED_HEADERS
               if name in response.headers}
    done = connection.execute(MARK_DONE, {
        **params, "status": response.status_code,
        "stored_headers": orjson.dumps(headers).decode(), "stored_body": response.get_data()})
    return done.rowcount == 1


def release(params: dict) -> None:
    """Delete this request's claim, so that a retry may run: on the request's connection,
    or on a new one if that was lost (a 503). If the database can't be reached at all, the
    claim is left to go stale (IDEMPOTENCY_STALE_SECONDS)."""
    connection = db.connection()
    try:
        if not connection.invalidated:
            connection.execute(RELEASE, params)
            return
        with db.engine.begin() as fresh:
            fresh.execute(RELEASE, params)
    except SQLAlchemyError:
        log.warning("Could not release an %s claim; it will go stale.", HEADER, exc_info=True)


def answer_repeat(stored, params: dict) -> Response:
    differing = [name for name, first, now_sent in (
        ("method", stored.request_method, params["method"]),
        ("path", stored.request_path, params["path"]),
        ("body", stored.body_digest, params["digest"])) if first != now_sent]
    if differing:
        names = " and ".join(filter(None, (", ".join(differing[:-1]), differing[-1])))
        mismatch = f"the {names} {'differs' if len(differing) == 1 else 'differ'}"
        abort(422, message=(
            f"This {HEADER} was used for another request ({stored.request_method} "
            f"{stored.request_path}): {mismatch}. Use a new key for a new request."),
            errors={"headers": {HEADER: [f"Used for another request: {mismatch}."]}})
    if stored.state != "done":
        still_running()
    response = Response(stored.response_body, stored.response_status,
                        orjson.loads(stored.response_headers))
    response.headers[REPLAYED] = "true"
    return response


def still_running() -> NoReturn:
    abort(409, message=f"A request with this {HEADER} is still running; retry shortly.",
          headers={"Retry-After": "1"})


def purge_expired(connection: Connection) -> int:
    """Delete every expired row; how many there were."""
    return connection.execute(delete(keys).where(keys.c.expires_at <= now())).rowcount
