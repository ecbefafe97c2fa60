"""How a request becomes an API key, and the `flask api-key` commands that manage keys."""
import hashlib
import logging
import os
import re
import threading
import time
from select import select as select_fds

import click
import psycopg
from flask import Blueprint, current_app, g, request
from flask_smorest import abort
from sqlalchemy import Row, bindparam, select

from .extensions import db
from .models import ApiKey, utcnow

log = logging.getLogger(__name__)

# Besides the bare key (as the original service took it), these scheme words, in any case.
SCHEMES = {"token", "bearer", "api-key"}


def secret_from_header(header: str) -> str | None:
    parts = header.split()
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and parts[0].lower() in SCHEMES:
        return parts[1]
    return None


KEYS_BY_PREFIX = (
    select(ApiKey.id, ApiKey.organization, ApiKey.all_organizations, ApiKey.key_salt,
           ApiKey.key_digest)
    .where(ApiKey.key_prefix == bindparam("prefix"), ApiKey.revoked_at.is_(None))
)


class KeyCache:
    """Key lookups cached in each process, on PostgreSQL. A trigger NOTIFYs
    `api_keys_changed` on every change to api_keys (migration 0003); each process LISTENs
    on a connection of its own and empties its cache whenever told, so a revoked key is
    refused as soon as the notification arrives, without a query per request. A cached
    lookup is also used for `max_age` seconds at most, so a revoked key is refused within
    that whatever happens to the listening connection (a firewall that silently drops it
    loses the notification for good). While not listening (SQLite; the listening
    connection lost), it does not cache."""

    CHANNEL = "api_keys_changed"
    RETRY_SECONDS = 5.0
    # libpq: notice a dead peer of the idle listening connection within seconds, and give
    # up on data the network no longer acknowledges (the LISTEN of a reconnection).
    LIVENESS = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 1,
                "keepalives_count": 3, "tcp_user_timeout": 5000}

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self.keys: dict[bytes, tuple[Row, float]] = {}  # by the secret's digest: when looked up
        self.lock = threading.Lock()  # the listening connection is shared by the threads
        self.listener = None
        self.pid = None
        self.next_attempt = 0.0

    def lookup(self, secret: str) -> Row | None:
        cache_key = hashlib.sha256(secret.encode()).digest()  # the secret itself isn't kept
        now = time.monotonic()
        with self.lock:
            listening = self._listen()
            cached = self.keys.get(cache_key) if listening and not self._drain() else None
        if cached is not None and now - cached[1] < self.max_age:
            return cached[0]
        key = self._query(secret)
        with self.lock:  # cache it only if nothing changed while we looked
            if key is not None and listening and not self._drain():
                self.keys[cache_key] = (key, now)
        return key

    @staticmethod
    def _query(secret: str) -> Row | None:
        candidates = db.connection().execute(KEYS_BY_PREFIX, {"prefix": ApiKey.prefix(secret)})
        return next((key for key in candidates
                     if ApiKey.matches(key.key_salt, key.key_digest, secret)), None)

    def _listen(self) -> bool:
        """Whether this process is listening; (re)connects now and then if not."""
        if self.listener is not None and self.pid == os.getpid():
            return True
        if db.engine.dialect.name != "postgresql" or time.monotonic() < self.next_attempt:
            return False
        self.next_attempt = time.monotonic() + self.RETRY_SECONDS
        try:
            url = db.engine.url.set(drivername="postgresql")
            timeout = current_app.config["DATABASE_CONNECT_TIMEOUT"]
            listener = psycopg.connect(url.render_as_string(hide_password=False),
                                       autocommit=True, connect_timeout=timeout,
                                       **self.LIVENESS)
            listener.execute(f"LISTEN {self.CHANNEL}")
        except Exception:  # noqa: BLE001 - no cache until the database answers again
            log.warning("Can't listen for API key changes; keys are looked up each time.",
                        exc_info=True)
            return False
        self.listener, self.pid = listener, os.getpid()
        self.keys.clear()
        return True

    def _drain(self) -> bool:
        """Read pending notifications, emptying the cache if there were any or if the
        listening connection is lost. Returns whether it emptied the cache. It reads for as
        long as there is something to read: a backend that was killed sends its goodbye
        first, and only the read after that finds the connection closed."""
        try:
            changed = self.listener is None
            while not changed:
                changed = any(self.listener.notifies(timeout=0))
                if not select_fds([self.listener.fileno()], [], [], 0)[0]:
                    break
        except psycopg.Error:
            self.listener = None
            changed = True
        if changed:
            self.keys.clear()
        return changed


def authenticate() -> None:
    """Before every request under /ux/: a valid, unrevoked key, or 401. (A CORS preflight
    carries no key: it only asks what may be sent.)"""
    if request.method == "OPTIONS":
        return
    secret = secret_from_header(request.headers.get("Authorization", ""))
    key = secret and current_app.extensions["api_key_cache"].lookup(secret)
    if not key:
        abort(
            401,
            message="A valid API key is required in the Authorization header.",
            headers={"WWW-Authenticate": 'Token realm="messenger"'},
        )
    g.api_key = key


def current_key():
    """The current request's key: its `id`, `organization` and `all_organizations`."""
    return g.api_key


def require_organization_access(organization: str | None) -> None:
    """403 unless the current key may put a message in `organization`."""
    key = current_key()
    if not (key.all_organizations or organization == key.organization):
        abort(403, message="This API key can't write messages of another organization.")


cli = Blueprint("api_keys", __name__, cli_group="api-key")


@cli.cli.command("create")
@click.option("--organization", help="The organization whose messages the key reaches.")
@click.option("--all-organizations", is_flag=True, help="Reach every organization's messages.")
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--if-none", is_flag=True, help="Do nothing when an unrevoked key exists.")
def create_key(organization, all_organizations, name, if_none):
    """Create an API key and print it, once, on the last line."""
    if bool(organization) == all_organizations:
        raise click.UsageError("Give exactly one of --organization ORG and --all-organizations.")
    session = db.session
    if if_none and session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)):
        return
    key, secret = ApiKey.generate(organization, name)
    session.add(key)
    session.commit()
    scope = f"organization {organization}" if organization else "all organizations"
    click.echo(f"Created API key {key.id} ({scope}). Keep it now; it is not shown again:")
    click.echo(secret)


@cli.cli.command("list")
def list_keys():
    """List API keys (never the keys themselves, only their first characters)."""
    keys = db.session.scalars(select(ApiKey).order_by(ApiKey.id))
    click.echo("id\tprefix\torganization\tname\tcreated\trevoked")
    for key in keys:
        organization = "*" if key.all_organizations else key.organization
        click.echo(
            f"{key.id}\t{key.key_prefix}…\t{organization}\t{key.name}\t"
            f"{key.created_at:%Y-%m-%d %H:%M:%S}\t{key.revoked_at or ''}"
        )


@cli.cli.command("revoke")
@click.argument("key_or_id")
def revoke_key(key_or_id):
    """Revoke an API key, given the key itself or its id from `list`."""
    session = db.session
    if re.fullmatch(r"[0-9]{1,18}", key_or_id):  # an id (ASCII digits: "²" is no id)
        key = session.get(ApiKey, int(key_or_id))
    else:
        candidates = session.scalars(
            select(ApiKey).where(ApiKey.key_prefix == ApiKey.prefix(key_or_id)))
        key = next((candidate for candidate in candidates
                    if ApiKey.matches(candidate.key_salt, candidate.key_digest, key_or_id)), None)
    if key is None:
        raise click.ClickException("No such API key.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.commit()
    click.echo(f"Revoked API key {key.id}.")
