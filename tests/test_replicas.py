"""Read replicas: PostgreSQL streaming replicas that the tests make themselves
(tests/clusters.py), reads routed to them, read-your-writes by consistency token, lag and
failure, and the replicas' state in /readyz and /metrics."""
import secrets
import threading
import time
from types import SimpleNamespace

import pytest
from alembic import command
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from helpers import (SMS, alembic_config, create, documented_queries, documented_role_statements,
                     make_key, url)
from messenger_app.replicas import lag_seconds, parse_lsn

DATABASE = "messenger_replicas"


@pytest.fixture(scope="module")
def replicated_database(primary_server, replica_server, lagging_replica) -> str:
    """A migrated database on the test primary, replicated to both replicas."""
    primary_server.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    primary_server.execute(f'CREATE DATABASE "{DATABASE}"')
    command.upgrade(alembic_config(primary_server.url(DATABASE)), "head")
    replica_server.wait_until_caught_up()
    return primary_server.url(DATABASE)


def replicated_app(make_app, replicated_database, replicas, **config):
    app = make_app({"DATABASE_URL": replicated_database,
                    "DATABASE_REPLICA_URLS": [replica.url(DATABASE) for replica in replicas],
                    **config})
    return app, app.test_client(), make_key(app, "acme")


def replica_states(client) -> list[str]:
    return [replica["state"] for replica in client.get("/readyz").get_json()["replicas"]]


def wait_for_states(client, *states: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while replica_states(client) != list(states):
        assert time.monotonic() < deadline, replica_states(client)
        time.sleep(0.1)


def messages_scanned(server) -> int:
    """How often the messages table (any partition) was scanned, by the server's own
    statistics: each read of messages scans it once at least, nothing else does."""
    return server.execute(
        "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)"
        " FROM pg_stat_user_tables WHERE relname LIKE 'messages%'", database=DATABASE)[0][0]


def settled_scans(server, app) -> int:
    """`messages_scanned` once the app's connections are closed (a backend reports its
    statistics when it ends, or within seconds when idle) and the count holds still."""
    app.extensions["database"].dispose()
    for replica in app.extensions["replicas"].replicas:
        replica.engine.dispose()
    last, stable_since = messages_scanned(server), time.monotonic()
    while time.monotonic() - stable_since < 1.5:
        time.sleep(0.25)
        now = messages_scanned(server)
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def test_reads_run_on_the_replica_and_not_on_the_primary(
        make_app, replicated_database, primary_server, replica_server):
    app, client, acme = replicated_app(make_app, replicated_database, [replica_server])
    ids = [create(client, acme)["id"] for _ in range(5)]
    replica_server.wait_until_caught_up()
    wait_for_states(client, "ok")
    assert client.get(url(ids[0]), headers=acme).status_code == 200  # the key is cached now
    primary_before = settled_scans(primary_server, app)
    replica_before = settled_scans(replica_server, app)

    for message_id in ids * 4:
        assert client.get(url(message_id), headers=acme).status_code == 200
    for query in ("", "?cursor=*", "?page=1&page_size=2", "?ordering=-id"):
        assert len(client.get(SMS + query, headers=acme).get_json()) >= 2

    assert settled_scans(replica_server, app) - replica_before >= 24
    # The replica checks of the app's own thread run on the replica; none of it here.
    assert settled_scans(primary_server, app) - primary_before == 0


def test_a_client_reads_its_own_writes_from_a_lagging_replica(
        make_app, replicated_database, lagging_replica):
    """The replica applies each commit 3 s late; max lag is set past that, so it serves
    reads, and only a read with the write's token goes to the primary."""
    app, client, acme = replicated_app(make_app, replicated_database, [lagging_replica],
                                       DATABASE_REPLICA_MAX_LAG_SECONDS=3600)
    wait_for_states(client, "ok")
    created = client.post(SMS, json={"ref_id": "mine"}, headers=acme)
    token = created.headers["Consistency-Token"]
    message = url(created.get_json()["id"])
    stranger = app.test_client()  # no cookie, no token

    assert stranger.get(message, headers=acme).status_code == 404  # not replayed yet
    assert client.get(message, headers=acme).status_code == 200  # its cookie
    assert stranger.get(message, headers={**acme, "Consistency-Token": token}).status_code == 200
    listed = stranger.get(f"{SMS}?ref_id=mine", headers={**acme, "Consistency-Token": token})
    assert [m["ref_id"] for m in listed.get_json()] == ["mine"]

    patched = client.patch(message, json={"ref_id": "changed"}, headers=acme)
    assert client.get(message, headers=acme).get_json()["ref_id"] == "changed"
    assert client.get(f"{SMS}?ref_id=changed", headers=acme).get_json()[0]["id"] == \
        patched.get_json()["id"]

    deleted = client.delete(message, headers=acme)
    assert deleted.status_code == 204 and "Consistency-Token" in deleted.headers
    assert client.get(message, headers=acme).status_code == 404
    assert client.get(f"{SMS}?ref_id=changed", headers=acme).get_json() == []

    deadline = time.monotonic() + 15  # the stranger sees it all once the replica has it
    while stranger.get(f"{SMS}?ref_id=mine", headers=acme).get_json():
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_replica_behind_its_max_lag_gets_no_reads(make_app, replicated_database,
                                                      lagging_replica):
    app, client, acme = replicated_app(make_app, replicated_database, [lagging_replica],
                                       DATABASE_REPLICA_MAX_LAG_SECONDS=1)
    created = create(client, acme, {"ref_id": "fresh"})

    wait_for_states(client, "lagging")
    stranger = app.test_client()
    assert stranger.get(url(created["id"]), headers=acme).status_code == 200  # the primary
    (replica,) = client.get("/readyz").get_json()["replicas"]
    assert replica["lag_seconds"] > 1 and "behind" in replica["reason"]


def test_a_replica_stopped_under_load_costs_no_error(make_app, replicated_database,
                                                       replica_server):
    app, client, acme = replicated_app(make_app, replicated_database, [replica_server])
    message = url(create(client, acme)["id"])
    replica_server.wait_until_caught_up()
    wait_for_states(client, "ok")
    statuses, stop = [], threading.Event()

    def read_until_stopped():
        reader = app.test_client()
        while not stop.is_set():
            statuses.append(reader.get(message, headers=acme).status_code)

    readers = [threading.Thread(target=read_until_stopped) for _ in range(4)]
    for reader in readers:
        reader.start()
    try:
        time.sleep(0.5)
        replica_server.stop(mode="immediate")
        time.sleep(1.5)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        replica_server.start()

    assert statuses and set(statuses) == {200}
    assert replica_states(client) == ["down"]
    wait_for_states(client, "ok", within=30)  # and back once it is
    metrics = client.get("/metrics").get_data(as_text=True)
    replica_name = client.get("/readyz").get_json()["replicas"][0]["name"]
    assert f'messenger_db_reads_total{{target="{replica_name}"}}' in metrics
    assert 'messenger_db_reads_total{target="primary"}' in metrics
    assert f'messenger_db_replica_up{{replica="{replica_name}"}} 1.0' in metrics


def test_replicas_that_cannot_be_reached_do_not_stop_the_service(make_app, replicated_database,
                                                                   caplog):
    app = make_app({"DATABASE_URL": replicated_database, "DATABASE_REPLICA_URLS": [
        "postgresql+psycopg://postgres@127.0.0.1:1/nothing", "not a url at all"]})
    client, acme = app.test_client(), make_key(app, "acme")

    created = create(client, acme)
    assert client.get(url(created["id"]), headers=acme).status_code == 200
    wait_for_states(client, "down", "invalid")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    assert "not a database URL" in caplog.text and "is down" in caplog.text


def test_export_reads_from_a_replica(make_app, replicated_database, replica_server, tmp_path):
    app, client, acme = replicated_app(make_app, replicated_database, [replica_server])
    create(client, acme, {"ref_id": "exported"})
    replica_server.wait_until_caught_up()

    result = app.test_cli_runner().invoke(args=["export", str(tmp_path / "out.jsonl")])

    assert result.exit_code == 0, result.output
    assert f"exporting from replica {replica_server_name(replica_server)}" in result.output
    assert b'"ref_id":"exported"' in (tmp_path / "out.jsonl").read_bytes()


def replica_server_name(server) -> str:
    return f"127.0.0.1:{server.port}/{DATABASE}"


def test_key_lookups_and_revocation_stay_on_the_primary(make_app, replicated_database,
                                                         lagging_replica):
    """A key created or revoked on the primary counts at once, however far behind the
    replica that serves the reads is."""
    app, client, acme = replicated_app(make_app, replicated_database, [lagging_replica],
                                       DATABASE_REPLICA_MAX_LAG_SECONDS=3600)
    fresh = make_key(app, "acme")
    assert client.get(SMS, headers=fresh).status_code == 200

    engine = create_engine(replicated_database)
    with engine.begin() as connection:
        connection.execute(text("UPDATE api_keys SET revoked_at = now()"))
    engine.dispose()

    deadline = time.monotonic() + 2
    while client.get(SMS, headers=fresh).status_code != 401:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_an_analyst_reports_on_a_replica(replicated_database, primary_server, replica_server):
    """docs/reporting.md's role, made on the primary, reads on the replica (and writes
    nowhere)."""
    suffix = secrets.token_hex(4)
    reader, analyst = f"test_reader_{suffix}", f"test_analyst_{suffix}"
    primary_server.execute(documented_role_statements(reader, analyst, DATABASE),
                           database=DATABASE)
    replica_server.wait_until_caught_up()
    engine = create_engine(make_url(replica_server.url(DATABASE)).set(username=analyst))
    primary = create_engine(replicated_database)
    try:
        with primary.connect() as connection:
            on_primary = connection.scalar(text("SELECT count(*) FROM message_report"))
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT pg_is_in_recovery()"))
            assert connection.scalar(text("SELECT count(*) FROM message_report")) == on_primary
            for query in documented_queries():  # each runs; the data are another test's
                connection.execute(text(query)).all()
            with pytest.raises(DBAPIError, match="read-only"):
                connection.execute(text("DELETE FROM messages"))
    finally:
        primary.dispose()
        engine.dispose()
        primary_server.execute(f'DROP OWNED BY "{analyst}", "{reader}"', database=DATABASE)
        primary_server.execute(f'DROP ROLE "{analyst}", "{reader}"')


@pytest.mark.parametrize("received, replayed, age, lag", [
    ("0/3000060", "0/3000060", 99.0, 0.0),  # all replayed: an idle primary, caught up
    (None, "0/3000060", None, 0.0),  # no WAL receiver (restored from an archive): as replayed
    ("0/3000090", "0/3000060", 2.5, 2.5),  # behind: the age of the last transaction replayed
    ("0/3000090", "0/3000060", None, None),  # none replayed since it started: unknown
])
def test_a_replicas_lag_is_read_from_its_own_positions(received, replayed, age, lag):
    row = SimpleNamespace(received=received, replayed=replayed, replayed_age=age)
    assert lag_seconds(row) == lag


@pytest.mark.parametrize("token, position", [
    ("0/16B3748", 0x16B3748), ("16/B374D848", 0x16 << 32 | 0xB374D848),
    ("", None), ("0/", None), ("x/1", None), ("1/2/3", None), ("123456789/0", None),
])
def test_consistency_tokens_are_wal_positions(token, position):
    assert parse_lsn(token) == position


def test_reads_go_to_another_replica_while_one_is_down(make_app, replicated_database,
                                                        replica_server, lagging_replica):
    app, client, acme = replicated_app(make_app, replicated_database,
                                       [replica_server, lagging_replica],
                                       DATABASE_REPLICA_MAX_LAG_SECONDS=3600)
    message = url(create(client, acme)["id"])
    time.sleep(3.5)  # the lagging replica applies it
    replica_server.wait_until_caught_up()
    wait_for_states(client, "ok", "ok")
    replica_server.stop(mode="immediate")
    try:
        wait_for_states(client, "down", "ok")
        other = app.extensions["replicas"].replicas[1].name
        before = reads_on(client, other)

        answers = [client.get(message, headers=acme).status_code for _ in range(10)]
        after = reads_on(client, other)
    finally:
        replica_server.start()

    assert answers == [200] * 10
    assert after - before == 10


def reads_on(client, target: str) -> float:
    """The reads /metrics counts for `target` so far."""
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(f'messenger_db_reads_total{{target="{target}"}}'):
            return float(line.split()[-1])
    return 0.0
