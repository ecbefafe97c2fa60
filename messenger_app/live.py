"""Live updates: each process's one reader of the outbox (outbox.py), and the streams it
wakes. The reader, `Feed`, runs in a thread (a greenlet under gunicorn's gevent workers):
woken by PostgreSQL's NOTIFY `message_events` (sent by the writing process's `Notifier` just
after each write commits; its LISTEN connection is the process's own, as for key changes)
or, on SQLite or through a transaction pooler without DATABASE_SESSION_URL, every
POLL_SECONDS. It reads the new events with one statement, on a connection of the pool that
it gives back at once, keeps the latest in memory, and wakes the streams that may see them
(those of the organizations they touch, and every all-organizations one), which filter them
for their key and their filters: no stream queries the table while it follows the present.
A stream further behind than the memory reads the table a page at a time, again on a
connection that it gives back after each page. Whoever reads, reads the settled events
only (outbox.py): every reader sees one order."""
import logging
import os
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterator
from datetime import timedelta
from functools import cached_property
from typing import NamedTuple

import psycopg
from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from . import outbox
from .listening import can_listen, connect, listen
from .message_json import decode
from .models import utcnow
from .outbox import Position

log = logging.getLogger(__name__)

CHANNEL = "message_events"


class Change:
    """An event with its message decoded, and its encodings for streams (each made once,
    however many streams send it)."""

    def __init__(self, event: outbox.Event) -> None:
        self.event = event
        self.encoded: dict[str, bytes] = {}  # by the kind a key sees it as

    @cached_property
    def message(self) -> dict | None:
        return None if self.event.message is None else decode(self.event.message)


class Delivery(NamedTuple):
    """An event as one key sees it."""

    position: Position
    kind: str  # as this key sees it: a move is `deleted` to the organization left
    message_id: str
    message: dict | None  # None for deleted
    change: Change


def seen_as(event: outbox.Event, scope: str | None) -> str | None:
    """The kind of event `scope`'s key sees (None: none). An organization's key sees a
    message moved in as created and one moved out as deleted; an all-organizations key
    sees the move as the update it is."""
    if scope is None:
        return event.kind
    now_in, was_in = event.organization == scope, event.previous_organization == scope
    if now_in and was_in:
        return event.kind
    return "created" if now_in else "deleted" if was_in else None


def deliveries(changes: list[Change], scope: str | None,
               matches: Callable[[dict], bool]) -> Iterator[Delivery]:
    """What `scope`'s key sees of `changes`, filtered: a created or updated message whose
    state after the change `matches`; every deletion (its message has no state after)."""
    for change in changes:
        kind = seen_as(change.event, scope)
        if kind is None:
            continue
        message = None if kind == "deleted" else change.message
        if message is None or matches(message):
            yield Delivery(change.event.position, kind, change.event.message_id, message, change)


def read_matching(connection: Connection, after: Position, scope: str | None,
                  matches: Callable[[dict], bool], limit: int
                  ) -> tuple[list[Delivery], Position, bool]:
    """Up to `limit` settled events after `after` from the table, as `scope` sees them,
    filtered; the position read up to; whether more may follow at once."""
    events, held = outbox.read_after(connection, after, scope, limit)
    if events:
        after = events[-1].position
    found = list(deliveries([Change(event) for event in events], scope, matches))
    return found, after, len(events) == limit


class Window(NamedTuple):
    """The events a process keeps in memory: every one after `floor`, in order."""

    floor: Position
    changes: list[Change]


class Feed:
    """The process's reader of the outbox, and what its streams wait on. One per app."""

    KEPT = 2000  # events in memory (up to twice that between trims)
    READ_BATCH = 500
    POLL_SECONDS = 0.5  # without NOTIFY
    CHECK_SECONDS = 5.0  # with NOTIFY: a notification lost while reconnecting is late by this
    HELD_SECONDS = (0.005, 0.5)  # re-read while a running transaction holds events back
    PURGE_SECONDS = 3600.0

    def __init__(self, engine: Engine, listen_url: str | None, connect_timeout: int,
                 retention_days: float) -> None:
        self.engine = engine
        self.listen_url = listen_url if can_listen(listen_url) else None
        self.connect_timeout = connect_timeout
        self.retention = timedelta(days=retention_days)
        self.window = Window(outbox.ORIGIN, [])
        # By scope (an organization; None: all): set, and dropped, when events it may see
        # are added. Taken and set under `adding`, with the window read or extended.
        self.signals: dict[str | None, threading.Event] = {}
        self.adding = threading.Lock()
        self.stopping = False
        self.pid: int | None = None
        self.lock = threading.Lock()
        self.listener: psycopg.Connection | None = None
        self.next_purge = 0.0

    # --- The reader ---------------------------------------------------------------------

    def start(self) -> None:
        """Start reading in this process, from the present, unless it does already."""
        with self.lock:
            if self.pid == os.getpid():
                return
            with self.engine.connect() as connection:
                present = outbox.newest(connection)
            self.window, self.stopping, self.pid = Window(present, []), False, os.getpid()
            self.next_purge = time.monotonic() + self.PURGE_SECONDS
            threading.Thread(target=self._run, name="live-updates", daemon=True).start()

    def stop(self) -> None:
        """End every stream of this process (gunicorn's SIGTERM; an app disposed of)."""
        with self.adding:
            self.stopping = True
            self._wake(set(self.signals))
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()

    def _run(self) -> None:
        delay = None
        while not self.stopping:
            self._wait(delay)
            if self.stopping:  # (woken by stop(): its database may be gone already)
                return
            try:
                held = self._read()
                self._purge_now_and_then()
            except Exception:  # noqa: BLE001 - the database is away: try again shortly
                log.warning("Live updates: can't read new events; trying again.", exc_info=True)
                held, delay = False, 1.0
                continue
            low, high = self.HELD_SECONDS
            delay = min(high, 2 * delay if delay else low) if held else None

    def _wait(self, delay: float | None) -> None:
        """Until a notification, or `delay` seconds (None: the usual interval)."""
        if self.listen_url is None:
            time.sleep(self.POLL_SECONDS if delay is None else delay)
            return
        try:
            if self.listener is None:
                self.listener = listen(self.listen_url, CHANNEL, self.connect_timeout)
            timeout = self.CHECK_SECONDS if delay is None else delay
            for _ in self.listener.notifies(timeout=timeout, stop_after=1):
                pass
            for _ in self.listener.notifies(timeout=0):  # the others, sent meanwhile
                pass
        except (psycopg.Error, AttributeError):
            # Lost (or closed by stop()): read now, listen again next time.
            self.listener = None
            if not self.stopping:
                time.sleep(self.POLL_SECONDS)

    def _read(self) -> bool:
        """Add the new settled events; whether later ones are held back."""
        while True:
            window = self.window
            after = window.changes[-1].event.position if window.changes else window.floor
            with self.engine.connect() as connection:
                events, held = outbox.read_after(connection, after, None, self.READ_BATCH)
            if events:
                self._add([Change(event) for event in events])
            if len(events) < self.READ_BATCH:
                return held

    def _add(self, changes: list[Change]) -> None:
        scopes = {None} | {organization for change in changes for organization in
                           (change.event.organization, change.event.previous_organization)}
        with self.adding:
            window = self.window
            window.changes.extend(changes)
            if len(window.changes) > 2 * self.KEPT:  # a new window: streams hold the old one
                dropped = len(window.changes) - self.KEPT
                self.window = Window(window.changes[dropped - 1].event.position,
                                     window.changes[dropped:])
            self._wake(scopes)

    def _wake(self, scopes: set[str | None]) -> None:
        for scope in scopes:
            signal = self.signals.pop(scope, None)
            if signal is not None:
                signal.set()

    def signal(self, scope: str | None) -> threading.Event:
        """What the next events that `scope`'s key may see set (take it before reading)."""
        with self.adding:
            if self.stopping:  # stop() has woken the others
                signal = threading.Event()
                signal.set()
                return signal
            return self.signals.setdefault(scope, threading.Event())

    def _skip_quiet(self, after: Position, signal: threading.Event) -> Position:
        """`after`, or the newest event in memory if none added since `signal` was taken
        (when every event up to `after` had been read) is for its scope: a stream of a quiet
        organization is not woken by others' events, yet does not fall behind the memory
        (and read the table) while they pass."""
        with self.adding:
            if signal.is_set() or not self.window.changes:
                return after
            return max(after, self.window.changes[-1].event.position)

    def _purge_now_and_then(self) -> None:
        if time.monotonic() < self.next_purge:
            return
        self.next_purge = time.monotonic() + self.PURGE_SECONDS
        with self.engine.begin() as connection:
            outbox.purge(connection, utcnow() - self.retention)

    # --- Streams ------------------------------------------------------------------------

    def follow(self, after: Position, scope: str | None, matches: Callable[[dict], bool],
               heartbeat: float) -> Generator[list[Delivery], None, None]:
        """Every event after `after` that `scope`'s key sees and `matches` passes, in order,
        in lists of those that came together; an empty list after each `heartbeat` seconds
        without one. Ends when the feed stops."""
        self.start()
        signal: threading.Event | None = None
        more = True
        while not self.stopping:
            if signal is not None and not more:  # all read when it was taken
                after = self._skip_quiet(after, signal)
            signal = self.signal(scope)  # before reading: what is added after it sets it
            found, after, more = self._since(after, scope, matches)
            if found:
                yield found
            elif not more and not signal.wait(heartbeat):
                yield []

    def _since(self, after: Position, scope: str | None, matches: Callable[[dict], bool]
               ) -> tuple[list[Delivery], Position, bool]:
        window = self.window
        if after < window.floor:  # behind what is kept in memory: a page of the table
            with self.engine.connect() as connection:
                return read_matching(connection, after, scope, matches, self.READ_BATCH)
        changes = window.changes[bisect_right(window.changes, after,
                                              key=lambda change: change.event.position):]
        if changes:
            after = changes[-1].event.position
        return list(deliveries(changes, scope, matches)), after, False

    def wait(self, changed: threading.Event, timeout: float) -> None:
        """Until events are added after `changed` was taken (self.signal), or `timeout`."""
        self.start()
        changed.wait(timeout)


class Notifier:
    """Tells every process's feed that a write of this one committed events: NOTIFY
    `message_events`, after the commit rather than in the write's transaction (a NOTIFY in
    a transaction takes, at its commit, a server-wide lock held until the commit is flushed:
    every writing transaction would wait for the others' flushes). It is sent by a thread of
    its own on a connection of its own, which flushes nothing (synchronous_commit off: a
    wake-up lost in a crash costs a feed CHECK_SECONDS, not an event), one at a time: a
    NOTIFY covers every write committed before it went. None on SQLite, or through a
    transaction pooler without DATABASE_SESSION_URL (the feeds poll)."""

    RETRY_SECONDS = 1.0
    # At most one NOTIFY this often a process: a write after a quiet spell goes out at once,
    # one under a heavier load waits for the next, up to this long. Every NOTIFY wakes each
    # LISTEN connection of the database; at 5 ms apart they took some 10% of the shared
    # benchmark's POST throughput.
    GATHER_SECONDS = 0.02

    def __init__(self, url: str | None, connect_timeout: int) -> None:
        self.url = url if can_listen(url) else None
        self.connect_timeout = connect_timeout
        self.pending = threading.Event()
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.stopping = False

    def written(self) -> None:
        """A write committed events (its request's db.write ended)."""
        if self.url is None:
            return
        with self.lock:
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="live-updates-notifier",
                                 daemon=True).start()
        self.pending.set()

    def stop(self) -> None:
        """Close the connection and end the thread (an app disposed of)."""
        self.stopping = True
        self.pending.set()

    def _run(self) -> None:
        assert self.url is not None
        connection: psycopg.Connection | None = None
        while True:
            self.pending.wait()
            self.pending.clear()
            if self.stopping:
                if connection is not None:
                    connection.close()
                return
            try:
                if connection is None:
                    connection = connect(self.url, self.connect_timeout,
                                         options="-c synchronous_commit=off")
                connection.execute(f"NOTIFY {CHANNEL}")
                time.sleep(self.GATHER_SECONDS)  # the writes meanwhile go out in the next
            except psycopg.Error:
                log.warning("Live updates: can't NOTIFY; the feeds find the events within "
                            "%s s.", Feed.CHECK_SECONDS, exc_info=True)
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(self.RETRY_SECONDS)
