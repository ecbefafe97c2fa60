"""API key lookups, cached in each process on PostgreSQL and emptied by NOTIFY."""
import hashlib
import logging
import os
import threading
import time

import psycopg
from sqlalchemy import Row, bindparam, select

from .db import db
from .listening import can_listen, listen
from .models import ApiKey

log = logging.getLogger(__name__)

KEYS_BY_PREFIX = (
    select(ApiKey.id, ApiKey.organization, ApiKey.all_organizations, ApiKey.key_salt,
           ApiKey.key_digest)
    .where(ApiKey.key_prefix == bindparam("prefix"), ApiKey.revoked_at.is_(None))
)


class KeyCache:
    """Key lookups cached in each process, on PostgreSQL. A trigger NOTIFYs
    `api_keys_changed` on every change to api_keys (migration 0003); each process LISTENs
    on a connection of its own, which a thread of its own waits on, and empties its cache
    whenever told, so a revoked key is refused as soon as the notification arrives, without
    a query (or a look at the listening connection) per request. A cached lookup is also
    used for `max_age` seconds at most, so a revoked key is refused within that whatever
    happens to the listening connection (a firewall that silently drops it loses the
    notification for good). While not listening (SQLite; the listening connection lost), it
    does not cache."""

    CHANNEL = "api_keys_changed"
    RETRY_SECONDS = 5.0

    def __init__(self, max_age: float, listen_url: str | None, connect_timeout: int) -> None:
        self.max_age = max_age
        self.listen_url = listen_url  # PostgreSQL itself: LISTEN needs a session of its own
        self.connect_timeout = connect_timeout
        self.keys: dict[bytes, tuple[Row, float]] = {}  # by the secret's digest: when looked up
        self.generation = 0  # counts the times the cache was emptied
        self.lock = threading.Lock()
        self.listener: psycopg.Connection | None = None
        self.pid: int | None = None
        self.next_attempt = 0.0

    def lookup(self, secret: str) -> Row | None:
        cache_key = hashlib.sha256(secret.encode()).digest()  # the secret itself isn't kept
        now = time.monotonic()
        with self.lock:
            listening, generation = self._listen(), self.generation
            cached = self.keys.get(cache_key) if listening else None
        if cached is not None and now - cached[1] < self.max_age:
            return cached[0]
        key = self._query(secret)
        with self.lock:  # cache it only if nothing changed while we looked
            if key is not None and listening and self.generation == generation:
                self.keys[cache_key] = (key, now)
        return key

    def close(self) -> None:
        """Stop listening (an app disposed of); the next lookup listens again."""
        with self.lock:
            listener, self.listener = self.listener, None
            self._forget()
        if listener is not None:
            listener.close()

    @staticmethod
    def _query(secret: str) -> Row | None:
        candidates = db.connection().execute(KEYS_BY_PREFIX, {"prefix": ApiKey.prefix(secret)})
        return next((key for key in candidates
                     if ApiKey.matches(key.key_salt, key.key_digest, secret)), None)

    def _listen(self) -> bool:
        """Whether this process is listening; (re)connects now and then if not. Under
        `lock`."""
        if self.listener is not None and self.pid == os.getpid():
            return True
        if not can_listen(self.listen_url) or time.monotonic() < self.next_attempt:
            return False
        assert self.listen_url is not None
        self.next_attempt = time.monotonic() + self.RETRY_SECONDS
        try:
            listener = listen(self.listen_url, self.CHANNEL, self.connect_timeout)
        except Exception:  # noqa: BLE001 - no cache until the database answers again
            log.warning("Can't listen for API key changes; keys are looked up each time.",
                        exc_info=True)
            return False
        self.listener, self.pid = listener, os.getpid()
        self._forget()
        threading.Thread(target=self._follow, args=(listener,), name="api-key-changes",
                         daemon=True).start()
        return True

    def _follow(self, listener: psycopg.Connection) -> None:
        """Empty the cache at each notification, and when the listening connection is lost
        or closed (a killed backend sends its goodbye first: the read after it fails)."""
        try:
            for _ in listener.notifies():
                with self.lock:
                    self._forget()
        except (psycopg.Error, AttributeError):  # lost, or closed by close()
            pass
        with self.lock:
            if self.listener is listener:
                self.listener = None
            self._forget()
        listener.close()

    def _forget(self) -> None:
        """Empty the cache (under `lock`): a lookup under way doesn't fill it again."""
        self.keys.clear()
        self.generation += 1
