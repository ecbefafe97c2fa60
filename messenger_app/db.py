"""The database: one engine per app, and each request's database work. A request takes a
connection from the engine's pool when it first needs one (`db.connection()`) and gives it
back at teardown. The connection is in autocommit mode: a read, or a write of one
statement, commits as it runs, with no BEGIN/COMMIT round trips. A write view runs inside
`db.write()` (see idempotency.write_once): statements that must commit together run on
`db.atomic()`, in one transaction that `write()` commits once, at its end. Nothing else in
the service begins or commits a request's transaction. A read that a replica may serve
goes through `db.read()` (replicas.py chooses). Commands use an ORM session."""
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar, cast

import psycopg
from flask import Flask, current_app, g
from sqlalchemy import Connection, create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from .replicas import Replica, Replicas

T = TypeVar("T")
WRITE_POSITION = "SELECT pg_current_wal_lsn()"

log = logging.getLogger(__name__)


class Database:
    """The request's unit of database work; `db` is the one instance."""

    def init_app(self, app: Flask) -> None:
        config = app.config

        def request_engine(url: str, connect_timeout: int, pool_size: int = POOL_SIZE) -> Engine:
            return make_engine(url, connect_timeout, config["DATABASE_STATEMENT_TIMEOUT"],
                               pooled=config["DATABASE_TRANSACTION_POOLING"],
                               pool_size=pool_size, isolation_level="AUTOCOMMIT")

        app.extensions["database"] = request_engine(config["DATABASE_URL"],
                                                    config["DATABASE_CONNECT_TIMEOUT"])
        # The live-updates feed (live.py) reads on a pool of its own: streams that resume
        # from far back all at once wait for one another, not for the requests' connections.
        app.extensions["feed_database"] = request_engine(
            config["DATABASE_URL"], config["DATABASE_CONNECT_TIMEOUT"], FEED_POOL_SIZE)
        # A replica's trouble must cost a request little: it is given up on sooner.
        replica_timeout = min(config["DATABASE_CONNECT_TIMEOUT"], 1)
        app.extensions["replicas"] = Replicas(
            config["DATABASE_REPLICA_URLS"], config["DATABASE_REPLICA_MAX_LAG_SECONDS"],
            lambda url: request_engine(url, replica_timeout))
        app.extensions["replicas"].watch()  # checked before the first read, if it can be
        app.teardown_appcontext(self._end_request)

    @property
    def replicas(self) -> Replicas:
        return current_app.extensions["replicas"]

    @property
    def engine(self) -> Engine:
        return current_app.extensions["database"]

    def connection(self) -> Connection:
        """The request's connection: each statement commits as it runs, unless `atomic()`
        has put it in the write's transaction."""
        if "db_connection" not in g:
            g.db_connection = self.engine.connect()
        return g.db_connection

    @contextmanager
    def write(self) -> Iterator[None]:
        """The request's write: what ran on `atomic()` inside commits when it ends, or is
        rolled back if it raises. One a request."""
        if "db_write" in g:
            raise RuntimeError("A request has one write.")
        g.db_write = None  # its transaction, once atomic() has begun it
        try:
            yield
            if g.db_write is not None:
                g.db_write.commit()
            current_app.extensions["live_notifier"].written()  # (live.py's feeds)
        finally:
            transaction = g.pop("db_write")
            if transaction is not None:
                self._end_transaction(transaction)

    def atomic(self) -> Connection:
        """The request's connection in its write's transaction, begun now if it was not yet:
        every statement from here to the end of the write commits with the others, at that
        end. (What ran before, on `connection()`, has committed already.)"""
        if "db_write" not in g:
            raise RuntimeError("atomic() is for a write: within db.write().")
        connection = self.connection()
        if g.db_write is None:
            connection.commit()  # ends SQLAlchemy's autobegun autocommit "transaction"; no I/O
            connection.execution_options(isolation_level=connection.default_isolation_level)
            g.db_write = connection.begin()
        return connection

    @staticmethod
    def _end_transaction(transaction) -> None:
        connection = transaction.connection
        if transaction.is_active:
            transaction.rollback()
        if not connection.invalidated:  # a lost connection is replaced at teardown
            connection.execution_options(isolation_level="AUTOCOMMIT")

    def read(self, run: Callable[[Connection], T], seen: int | None = None) -> T:
        """`run(connection)`, a read: on a replica that has replayed the WAL position `seen`
        (a client's consistency token; None: any replica within its max lag), else on the
        primary; on the primary again if the replica fails it (its connection lost or
        refused, a statement it cancelled)."""
        if not self.replicas:
            return run(self.connection())
        replica = self.replicas.choose(seen)
        if replica is None or replica.engine is None:
            g.db_read_target = "primary"
            return run(self.connection())
        g.db_read_target = replica.name
        try:
            g.db_read_connection = replica.engine.connect()
            return run(g.db_read_connection)
        except DBAPIError as error:
            if not (isinstance(error, OperationalError) or error.connection_invalidated):
                raise
            self._replica_failed(replica, error)
        g.db_read_target = "primary"
        return run(self.connection())

    @staticmethod
    def _replica_failed(replica: Replica, error: DBAPIError) -> None:
        log.warning("A read failed on replica %s; read on the primary instead: %s",
                    replica.name, getattr(error, "orig", error))
        replica.set_down(error)
        failed = g.pop("db_read_connection", None)
        if failed is not None:
            failed.invalidate()
            failed.close()

    @staticmethod
    def read_target() -> str | None:
        """Where this request's read ran, with replicas configured: "primary" or a replica's
        name (None: no read, or no replicas)."""
        return g.get("db_read_target")

    def write_position(self) -> str | None:
        """The primary's WAL position now, after a write (a consistency token; see
        replicas.py); None without replicas, or if the primary can't say: the write has
        committed, and its answer is not to fail for a token. Asked of the driver itself:
        through SQLAlchemy's execution this small statement cost 0.3 ms of CPU a write."""
        if not self.replicas or self.engine.dialect.name != "postgresql":
            return None
        driver = cast(psycopg.Connection, self.connection().connection.driver_connection)
        try:
            row = driver.execute(WRITE_POSITION).fetchone()
        except psycopg.Error as error:
            log.warning("No consistency token for this write: %s", error)
            return None
        return None if row is None else row[0]

    @staticmethod
    def hand_over_connection() -> Connection:
        """The connection this request read with, for a response that still reads with it
        once the request is over (a streamed list): teardown no longer closes it; the
        caller does."""
        return g.pop("db_read_connection") if "db_read_connection" in g else g.pop("db_connection")

    @staticmethod
    def release() -> None:
        """Give the request's connection back to the pool now: the request is about to wait
        (`connection()` takes one again)."""
        owned = g.pop("db_connection", None)
        if owned is not None:
            owned.close()

    @property
    def session(self) -> Session:
        """An ORM session for commands (the `flask` CLI), closed with the app context."""
        if "db_session" not in g:
            g.db_session = Session(self.engine, expire_on_commit=False)
        return g.db_session

    @staticmethod
    def _end_request(_exc) -> None:
        for name in ("db_session", "db_connection", "db_read_connection"):
            owned = g.pop(name, None)
            if owned is not None:
                owned.close()  # back to the pool (a lost connection is discarded)


POOL_SIZE = 15  # connections of a worker's pool for requests
FEED_POOL_SIZE = 5  # and for its live-updates feed: its reader, streams catching up


def make_engine(url: str, connect_timeout: int | None = None,
                statement_timeout_ms: int | None = None, pooled: bool = False,
                pool_size: int = POOL_SIZE, **engine_options) -> Engine:
    """The engine for `url`; on PostgreSQL, timeouts bound how long a request can wait for a
    database that is down or stuck (migrations run without them). JIT is off: it compiles
    a statement the planner guesses costly (a list on a million rows whose statistics are
    stale, say) and took 100 ms to save nothing on statements that run in a few. Sessions
    are in UTC (message_json renders date-times in UTC whatever the session's time zone).

    `pooled`: `url` goes through a transaction-pooling PgBouncer, which takes no startup
    options and can't keep a prepared statement on the server connection it gives a
    transaction (psycopg prepares a statement run five times): neither is used, and the
    settings above are the database's or the role's to make (docs/scaling.md)."""
    connect_args: dict[str, str | int | None] = {}
    if url.startswith("postgresql") and pooled:
        connect_args["prepare_threshold"] = None
        if connect_timeout:
            connect_args["connect_timeout"] = connect_timeout
    elif url.startswith("postgresql"):
        settings = ["-c jit=off", "-c timezone=UTC"]
        if connect_timeout:
            connect_args["connect_timeout"] = connect_timeout
        if statement_timeout_ms:
            settings.append(f"-c statement_timeout={statement_timeout_ms}")
        connect_args["options"] = " ".join(settings)
    # Up to `pool_size` connections, kept once opened: a gevent worker serves many requests
    # at once, and connections opened past a smaller pool for a burst and closed after it
    # cost a PostgreSQL backend's start each (some 5% of a POST's time under the shared
    # benchmark's load). A request waits for a free one no longer than for a new one (an
    # in-memory SQLite database has one connection a thread, and no pool to wait for).
    in_memory = make_url(url).database in (None, "", ":memory:")
    pool: dict[str, int] = {} if in_memory else {"pool_size": pool_size, "max_overflow": 0}
    if connect_timeout and not in_memory:
        pool["pool_timeout"] = connect_timeout
    engine = create_engine(url, connect_args=connect_args, **pool, **engine_options)
    if engine.dialect.name == "sqlite":
        if engine.url.database not in (None, "", ":memory:"):
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection, _record) -> None:
    # SQLite leaves foreign keys (and so ON DELETE CASCADE) off unless asked on every
    # connection; WAL and a busy timeout let several gunicorn workers share the file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.close()


db = Database()
