"""The tests' own PostgreSQL primary, streaming replicas and PgBouncer (tests/clusters.py,
fixtures in conftest.py) do what the replica and pooler tests rely on."""
import time

import psycopg
import pytest
from sqlalchemy import create_engine, text

from clusters import PostgresServer, require, scratch_directory, wait_for


def count(server: PostgresServer, table: str) -> int:
    return server.execute(f"SELECT count(*) FROM {table}")[0][0]


def test_a_row_written_on_the_primary_is_read_on_the_replica(primary_server, replica_server):
    primary_server.execute("CREATE TABLE replicated (id int PRIMARY KEY, note text)")
    primary_server.execute("INSERT INTO replicated VALUES (1, 'hello')")

    replica_server.wait_until_caught_up()

    engine = create_engine(replica_server.url())
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, note FROM replicated")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [(1, "hello")]


def test_the_replica_is_in_recovery_and_read_only(primary_server, replica_server):
    assert primary_server.execute("SELECT pg_is_in_recovery()") == [(False,)]
    assert replica_server.execute("SELECT pg_is_in_recovery()") == [(True,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        replica_server.execute("CREATE TABLE not_on_a_replica (id int)")


def test_the_lagging_replica_applies_a_write_only_after_its_delay(primary_server,
                                                                  lagging_replica):
    primary_server.execute("CREATE TABLE delayed (id int)")
    wait_for(lambda: lagging_replica.execute("SELECT to_regclass('delayed') IS NOT NULL")[0][0],
             15, "the table on the lagging replica")

    primary_server.execute("INSERT INTO delayed VALUES (1)")
    written = time.monotonic()

    # The delay counts from the commit on the primary, so for 1 s the row can't be there.
    while time.monotonic() < written + 1:
        assert count(lagging_replica, "delayed") == 0
        time.sleep(0.1)
    wait_for(lambda: count(lagging_replica, "delayed") == 1, 15, "the row on the replica")


def test_the_primary_lists_both_replicas_as_streaming(primary_server, replica_server,
                                                      lagging_replica):
    def streaming() -> set[str]:
        return {name for name, state in primary_server.execute(
            "SELECT application_name, state FROM pg_stat_replication") if state == "streaming"}

    wait_for(lambda: {"replica_server", "lagging_replica"} <= streaming(), 15,
             "both replicas streaming")
    assert {replica_server.application_name, lagging_replica.application_name} == {
        "replica_server", "lagging_replica"}


def test_a_query_through_pgbouncer_in_transaction_pooling(primary_server, pgbouncer):
    # psycopg's automatic prepared statements don't survive transaction pooling.
    engine = create_engine(pgbouncer.url(), connect_args={"prepare_threshold": None})
    try:
        with engine.connect() as connection:
            port = connection.execute(text("SELECT current_setting('port')")).scalar()
    finally:
        engine.dispose()
    assert port == str(primary_server.port)

    pools = [pool for pool in pgbouncer.admin("SHOW POOLS") if pool["database"] == "postgres"]
    assert [(pool["user"], pool["pool_mode"]) for pool in pools] == [("postgres", "transaction")]


def test_pgbouncer_refuses_startup_options(pgbouncer):
    """A client that sends `options` in its startup packet is refused by PgBouncer (as set up
    by default, and as in production): the app must not set its session settings that way."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(pgbouncer.url(driver="postgresql"), options="-c timezone=UTC")


def test_a_server_is_stopped_and_removed_when_the_test_using_it_fails():
    require("postgres")
    with scratch_directory() as root:
        with pytest.raises(ZeroDivisionError), PostgresServer.primary(root / "p") as server:
            server.start()
            assert server.execute("SELECT 1") == [(1,)]
            1 / 0  # noqa: B018 - the test's failure

        assert not server.directory.exists()
        with pytest.raises(psycopg.OperationalError):
            server.execute("SELECT 1")
    assert not root.exists()
