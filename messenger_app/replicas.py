"""Streaming read replicas (PostgreSQL's own replication): which one may serve a read.

Each process watches its replicas from a thread of its own, every CHECK_SECONDS: a replica
is `ok` when it answers, is in recovery, and is no further behind than its max lag; else
`lagging`, `down` (it can't be reached, or a read on it failed) or `invalid` (its URL is
not one). Requests never wait for a check: they go by the latest one.

Read your writes: every write answered while replicas are configured carries the primary's
WAL position after its commit, as a consistency token (a `Consistency-Token` header, and a
cookie for browsers). A read that brings one back runs on a replica only if the replica
had replayed that position at its last check, else on the primary; so a client sees its
own writes whichever worker or host answers. A read without a token runs on any `ok`
replica: it sees every write older than the max lag. API key lookups, idempotency records
and everything inside a write always use the primary."""
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

log = logging.getLogger(__name__)

CHECK_SECONDS = 0.5
CHECK = text(
    "SELECT pg_is_in_recovery() AS in_recovery, pg_last_wal_replay_lsn() AS replayed,"
    " pg_last_wal_receive_lsn() AS received,"
    " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) AS replayed_age")


def parse_lsn(token: str | None) -> int | None:
    """A WAL position (`16/B374D848`) as a number; None for anything else."""
    high, slash, low = (token or "").partition("/")
    if not slash or not (0 < len(high) <= 8 and 0 < len(low) <= 8):
        return None
    try:
        return int(high, 16) << 32 | int(low, 16)
    except ValueError:
        return None


def lag_seconds(row) -> float | None:
    """How far behind the primary a replica is, from its CHECK row: nothing when it has
    replayed all it received (an idle primary sends no new transactions, so the time of
    the last one replayed says nothing then); else how old the last one it replayed is;
    None if it has replayed none since it started."""
    if row.received is None or row.received == row.replayed:
        return 0.0
    return None if row.replayed_age is None else float(row.replayed_age)


@dataclass
class Replica:
    name: str  # host:port/database, for logs, /readyz and /metrics
    engine: Engine | None  # None: the URL is not one
    state: str = "unknown"
    lag_seconds: float | None = None
    replayed: int = 0  # the WAL position it had replayed at its last check
    checked_at: float = 0.0
    reason: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self, max_lag: float) -> None:
        if self.engine is None:
            return
        try:
            with self.engine.connect() as connection:
                row = connection.execute(CHECK).one()
        except SQLAlchemyError as error:
            self.set_down(error)
            return
        replayed = parse_lsn(row.replayed) or 0
        lag = lag_seconds(row)
        if not row.in_recovery:
            self._set("down", None, replayed, "not a replica (not in recovery)")
        elif lag is None:
            self._set("lagging", None, replayed,
                      "catching up: no transaction replayed since it started")
        elif lag > max_lag:
            self._set("lagging", lag, replayed, f"{lag:.1f} s behind (more than {max_lag:g} s)")
        else:
            self._set("ok", lag, replayed, "")

    def set_down(self, error: SQLAlchemyError) -> None:
        """Down, for `error` (the first line of the driver's message says why)."""
        reason = str(getattr(error, "orig", error)).strip().splitlines()
        self._set("down", None, self.replayed, reason[0] if reason else type(error).__name__)

    def _set(self, state: str, lag: float | None, replayed: int, reason: str) -> None:
        with self.lock:
            if state != self.state:
                logger = log.info if state == "ok" else log.warning
                logger("Replica %s is %s%s", self.name, state, f": {reason}" if reason else "")
            self.state, self.lag_seconds, self.replayed = state, lag, replayed
            self.reason, self.checked_at = reason, time.monotonic()


class Replicas:
    """An app's replicas, and the thread that checks them (one per process, started by the
    first read that needs it)."""

    def __init__(self, urls: list[str], max_lag: float, make_engine) -> None:
        self.max_lag = max_lag
        self.replicas = [self._replica(url, make_engine) for url in urls]
        self.pid: int | None = None
        self.lock = threading.Lock()
        self.closed = threading.Event()

    @staticmethod
    def _replica(url: str, make_engine) -> Replica:
        try:
            parsed = make_url(url)
            name = f"{parsed.host}:{parsed.port or 5432}/{parsed.database}"
            return Replica(name, make_engine(url))
        except (ArgumentError, ValueError) as error:
            log.error("DATABASE_REPLICA_URLS: %r is not a database URL (%s); it gets no reads.",
                      url.split("@")[-1], error)
            return Replica(url.split("@")[-1], None, state="invalid", reason="not a database URL")

    def __bool__(self) -> bool:
        return bool(self.replicas)

    def choose(self, position: int | None) -> Replica | None:
        """A replica that may serve a read by a client who has seen `position` (None: no
        token); None: the primary must."""
        self.watch()
        fit = [replica for replica in self.replicas if replica.state == "ok"
               and (position is None or replica.replayed >= position)]
        return random.choice(fit) if fit else None

    def watch(self) -> None:
        """Check the replicas from a thread of this process's, started now unless it runs
        (after a fork, the child's own)."""
        if not self.replicas or self.pid == os.getpid():
            return
        with self.lock:
            if self.pid == os.getpid():
                return
            for replica in self.replicas:  # a fork's replicas are checked afresh
                if replica.engine is not None:
                    replica.state, replica.replayed = "unknown", 0
                    replica.engine.dispose(close=False)  # the parent's connections stay its own
            threading.Thread(target=self._check_forever, name="replica-checks",
                             daemon=True).start()
            self.pid = os.getpid()

    def _check_forever(self) -> None:
        while not self.closed.is_set():
            for replica in self.replicas:
                replica.check(self.max_lag)
            self.closed.wait(CHECK_SECONDS)

    def close(self) -> None:
        """Stop checking, and close the replicas' connections."""
        self.closed.set()
        for replica in self.replicas:
            if replica.engine is not None:
                replica.engine.dispose()

    def check_now(self) -> None:
        """Check every replica at once (a command, which runs no thread)."""
        for replica in self.replicas:
            replica.check(self.max_lag)

    def status(self) -> list[dict]:
        """Each replica's state, for /readyz and /metrics."""
        self.watch()
        return [{"name": replica.name, "state": replica.state,
                 "lag_seconds": replica.lag_seconds, **({"reason": replica.reason}
                                                        if replica.reason else {})}
                for replica in self.replicas]
