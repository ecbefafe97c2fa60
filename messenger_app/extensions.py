"""The database: one engine per app, one autocommit connection per request (from the
engine's pool, given back at teardown), and `transaction()` for writes of several
statements."""
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import current_app, g
from sqlalchemy import Connection, create_engine, event, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from werkzeug.exceptions import ServiceUnavailable

from .openapi import api

log = logging.getLogger(__name__)


class Database:
    """One engine per app (so per process). A request takes a connection from its pool
    when it first needs one and gives it back at teardown, however it is served (one
    request a worker, or many at once). The connection is in autocommit mode, so reads
    cost no BEGIN/ROLLBACK round trips; see `transaction()` for writes of several
    statements. Commands use an ORM session."""

    def init_app(self, app) -> None:
        app.extensions["database"] = make_engine(
            app.config["DATABASE_URL"], app.config["DATABASE_CONNECT_TIMEOUT"],
            app.config["DATABASE_STATEMENT_TIMEOUT"], isolation_level="AUTOCOMMIT")
        app.teardown_appcontext(self._end_request)
        app.register_error_handler(OperationalError, database_unavailable)
        app.register_error_handler(PoolTimeout, database_unavailable)  # every connection busy

    @property
    def engine(self) -> Engine:
        return current_app.extensions["database"]

    def connection(self) -> Connection:
        if "db_connection" not in g:
            g.db_connection = self.engine.connect()
        return g.db_connection

    @staticmethod
    def hand_over_connection() -> Connection:
        """The request's connection, for a response that still reads with it once the
        request is over (a streamed list): teardown no longer closes it; the caller does."""
        return g.pop("db_connection")

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = Session(self.engine, expire_on_commit=False)
        return g.db_session

    @staticmethod
    def _end_request(_exc) -> None:
        for name in ("db_session", "db_connection"):
            owned = g.pop(name, None)
            if owned is not None:
                owned.close()  # back to the pool (a lost connection is discarded)


@contextmanager
def transaction(connection: Connection) -> Iterator[Connection]:
    """Make the statements run on a request's autocommit connection commit together. Inside
    another `transaction()` (an idempotent write), they join it."""
    if connection.get_execution_options().get("isolation_level", "AUTOCOMMIT") != "AUTOCOMMIT":
        yield connection
        return
    connection.commit()  # ends SQLAlchemy's autobegun autocommit "transaction"; no I/O
    connection.execution_options(isolation_level=connection.default_isolation_level)
    try:
        with connection.begin():
            yield connection
    finally:
        if not connection.invalidated:  # a lost connection is replaced at teardown
            connection.execution_options(isolation_level="AUTOCOMMIT")


def database_unavailable(error: OperationalError):
    """503, in the API's JSON, when the database can't be reached or gives up (connection
    refused or lost, timeouts, SQLite busy, no free connection in the pool); the details go
    to the log only."""
    log.error("Database unavailable: %s", getattr(error, "orig", error), exc_info=error)
    response = api.handle_http_exception(ServiceUnavailable(
        "The database can't be reached just now; try again shortly."))
    body, code, headers = response
    return body, code, {**headers, "Retry-After": "1"}


def make_engine(url: str, connect_timeout: int | None = None,
                statement_timeout_ms: int | None = None, **engine_options) -> Engine:
    """The engine for `url`; on PostgreSQL, timeouts bound how long a request can wait for a
    database that is down or stuck (migrations run without them). JIT is off: it compiles
    a statement the planner guesses costly (a list on a million rows whose statistics are
    stale, say) and took 100 ms to save nothing on statements that run in a few. Sessions
    are in UTC whatever the server's time zone: date-times come back as UTC text, which
    Python can always read (9999-12-31 in UTC would be year 10000 in Berlin)."""
    connect_args = {}
    if url.startswith("postgresql"):
        settings = ["-c jit=off", "-c timezone=UTC"]
        if connect_timeout:
            connect_args["connect_timeout"] = connect_timeout
        if statement_timeout_ms:
            settings.append(f"-c statement_timeout={statement_timeout_ms}")
        connect_args["options"] = " ".join(settings)
    # A request waits for a free connection of the pool no longer than for a new one (an
    # in-memory SQLite database has one connection a thread, and no pool to wait for).
    in_memory = make_url(url).database in (None, "", ":memory:")
    pool = {"pool_timeout": connect_timeout} if connect_timeout and not in_memory else {}
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
