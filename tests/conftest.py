"""Every test runs against SQLite, PostgreSQL, and PostgreSQL through PgBouncer in
transaction pooling mode (`pgbouncer`: the app's requests go through a PgBouncer the tests
start in front of the same server; migrations and the tests' own SQL go to it directly), on
a schema built by `alembic upgrade head`.

PostgreSQL: TEST_DATABASE_URL, by default a `messenger_test` database on 127.0.0.1:5432 that
is dropped and created anew for each run. Where PostgreSQL can't be reached its tests are
skipped, except with CI set, where they fail.

Only fixtures are here; the plain helpers, for tests and fixtures alike, are in helpers.py.
"""
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from contextlib import contextmanager

import pytest
from flask import Flask
from sqlalchemy import event, make_url, text

from clusters import PgBouncer, PostgresServer, require, scratch_directory
from helpers import (DROP_TRIGGER, FAILING_TRIGGER, POSTGRES_URL, Service, dispose_app, free_port,
                     make_key, migrated_database, on_postgresql, wait_until_serving)
from messenger_app import create_app
from messenger_app.config import PROJECT_ROOT
from messenger_app.db import db


@pytest.fixture(scope="session", params=["sqlite", "postgresql", "pgbouncer"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(backend, tmp_path_factory) -> str:
    """The database's own URL (PostgreSQL's itself for `pgbouncer`)."""
    return migrated_database(backend, tmp_path_factory,
                             "pgbouncer" if backend == "pgbouncer" else "main")


@pytest.fixture(scope="session")
def app(backend, database_url, request):
    config = {"DATABASE_URL": database_url, "TESTING": True}
    if backend == "pgbouncer":
        bouncer = request.getfixturevalue("suite_pgbouncer")
        config |= {"DATABASE_URL": bouncer.url(make_url(database_url).database),
                   "DATABASE_TRANSACTION_POOLING": True, "DATABASE_SESSION_URL": database_url}
    made = create_app(config)
    yield made
    dispose_app(made)


@pytest.fixture(scope="session")
def suite_pgbouncer(backend) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of the tests' PostgreSQL server."""
    require("pgbouncer")
    server = SimpleNamespace(port=make_url(POSTGRES_URL).port or 5432)
    with scratch_directory() as root, PgBouncer.start(root / "suite-pgbouncer", server,
                                                      pool_size=20) as bouncer:
        yield bouncer


@pytest.fixture(scope="session")
def postgres_app(tmp_path_factory):
    """An app on a PostgreSQL database of its own, for what only a server can show."""
    url = migrated_database("postgresql", tmp_path_factory, "server")
    made = create_app({"DATABASE_URL": url, "TESTING": True})
    yield made
    dispose_app(made)


@pytest.fixture
def make_app() -> Iterator[Callable[[dict], Flask]]:
    """`make_app(config)`: a new app, `create_app(config)`, for a test that needs other
    settings or another database than `app`'s. Every app it made is disposed
    (`dispose_app`) once the test is over."""
    made: list[Flask] = []

    def make(config: dict) -> Flask:
        made.append(create_app(config))
        return made[-1]

    yield make
    for each in made:
        dispose_app(each)


@pytest.fixture(autouse=True)
def _empty_tables(request):
    """Each test starts from empty tables (cascades remove the child rows)."""
    yield
    if "app" in request.fixturenames:
        app = request.getfixturevalue("app")
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(text("DELETE FROM messages"))
            connection.execute(text("DELETE FROM api_keys"))
            connection.execute(text("DELETE FROM idempotency_keys"))
            connection.execute(text("DELETE FROM message_events"))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def acme(app) -> dict:
    """Headers of an API key of the organization `acme`."""
    return make_key(app, "acme")


@pytest.fixture
def globex(app) -> dict:
    """Headers of an API key of another organization, `globex`."""
    return make_key(app, "globex")


@pytest.fixture
def admin(app) -> dict:
    """Headers of an all-organizations API key."""
    return make_key(app, None)


@pytest.fixture
def count_statements(app):
    """`with count_statements() as counted:` ... `counted[0]` SQL statements ran."""

    @contextmanager
    def counting():
        counted = [0]

        def count(*_args):
            counted[0] += 1

        with app.app_context():
            engine = db.engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            yield counted
        finally:
            event.remove(engine, "before_cursor_execute", count)

    return counting


@pytest.fixture(scope="session")
def service(tmp_path_factory) -> Service:
    """The service as deployed: gunicorn with gunicorn.conf.py and 3 workers, on a
    PostgreSQL database of its own and a free port."""
    url = migrated_database("postgresql", tmp_path_factory, "service")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": str(port),
           "WEB_CONCURRENCY": "3", "LOG_REQUESTS": "false"}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                               "wsgi:app"], cwd=PROJECT_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, server)
    keys_app = create_app({"DATABASE_URL": url})
    yield Service(base, server, keys_app)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    dispose_app(keys_app)


@pytest.fixture
def failing_key_value_writes(app, backend, monkeypatch):
    """`with failing_key_value_writes():` the database refuses every key/value row, so a
    write fails after its message row went in."""
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)

    def run(statements):
        with app.app_context():
            for statement in statements:
                db.session.execute(text(statement))
            db.session.commit()

    @contextmanager
    def failing():
        run(FAILING_TRIGGER["postgresql" if on_postgresql(backend) else "sqlite"])
        try:
            yield
        finally:
            run(DROP_TRIGGER["postgresql" if on_postgresql(backend) else "sqlite"])

    return failing


# --- Servers of the tests' own (tests/clusters.py): started by the first test that asks ---
# They are shared by the whole session: a test makes its own tables (or databases) on them.

@pytest.fixture(scope="session")
def primary_server() -> Iterator[PostgresServer]:
    """A PostgreSQL primary of its own on a free loopback port, with streaming replication
    on."""
    require("postgres")
    with scratch_directory() as root, PostgresServer.primary(root / "primary") as server:
        server.start()
        yield server


@pytest.fixture(scope="session")
def replica_server(primary_server) -> Iterator[PostgresServer]:
    """A streaming replica of primary_server (`wait_until_caught_up()` before reading what
    was just written)."""
    with scratch_directory() as root, primary_server.replica(
            root / "replica", application_name="replica_server") as replica:
        yield replica


@pytest.fixture(scope="session")
def lagging_replica(primary_server) -> Iterator[PostgresServer]:
    """A streaming replica of primary_server that applies each transaction 3 s after its
    commit (recovery_min_apply_delay)."""
    with scratch_directory() as root, primary_server.replica(
            root / "lagging", apply_delay="3s", application_name="lagging_replica") as replica:
        yield replica


@pytest.fixture(scope="session")
def pgbouncer(primary_server) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling in front of primary_server, for every database."""
    require("pgbouncer")
    with scratch_directory() as root, PgBouncer.start(root / "pgbouncer",
                                                      primary_server) as bouncer:
        yield bouncer
