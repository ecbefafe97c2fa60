"""/healthz and /readyz, and what the API answers when the database is unreachable."""
import time

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from helpers import CLOSED_PORT_URL, SMS, alembic_config, fresh_database, make_key
from messenger_app.db import db
from messenger_app.health import SCHEMA_HEAD

def test_health_checks_need_no_key(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready", "schema": SCHEMA_HEAD}


def test_not_ready_until_the_last_migration(backend, tmp_path_factory, make_app):
    url = fresh_database(backend, tmp_path_factory, "readiness")
    client = make_app({"DATABASE_URL": url}).test_client()
    assert client.get("/readyz").status_code == 503  # no schema at all

    command.upgrade(alembic_config(url), "0002")
    response = client.get("/readyz")
    assert response.status_code == 503 and SCHEMA_HEAD in response.get_json()["message"]

    command.upgrade(alembic_config(url), "head")
    assert client.get("/readyz").status_code == 200


def test_an_unreachable_database_is_a_quick_json_503(make_app):
    client = make_app({"DATABASE_URL": CLOSED_PORT_URL}).test_client()

    started = time.monotonic()
    responses = [client.get(SMS, headers={"Authorization": "Token x"}),
                 client.post(SMS, json={}, headers={"Authorization": "Token x"}),
                 client.get("/readyz")]

    assert time.monotonic() - started < 10
    for response in responses:
        body = response.get_json()
        assert response.status_code == 503 and body["code"] == 503, body
        assert "127.0.0.1" not in response.get_data(as_text=True)  # no connection details
    assert responses[0].headers["Retry-After"] == "1"
    assert client.get("/healthz").status_code == 200


def kill_service_connections(app) -> int:
    """Every connection of the app, those idle in its pool included (from outside it)."""
    outside = create_engine(app.config["DATABASE_URL"], isolation_level="AUTOCOMMIT")
    with outside.connect() as connection:
        killed = connection.scalar(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    outside.dispose()
    return killed


@pytest.mark.parametrize("method, body", [
    ("get", None), ("post", {"ref_id": "r"}), ("patch", {"ref_id": "r"}),
    ("patch", {"attachment_ids": ["a"], "sms_data": {"keys": "k"}}),  # a transaction
])
def test_the_service_recovers_by_itself_when_its_connections_are_killed(
        postgres_app, method, body):
    """pg_terminate_backend on every connection of the service (its request connection and
    its LISTEN connection), as a database restart or failover would."""
    client, acme = postgres_app.test_client(), make_key(postgres_app, "acme")
    created = client.post(SMS, json={"ref_id": "before"}, headers=acme).get_json()
    target = SMS if method == "post" else f"{SMS}{created['id']}/"

    assert kill_service_connections(postgres_app) >= 1  # and the LISTEN one, when up
    first = getattr(client, method)(target, json=body, headers=acme)
    later = [getattr(client, method)(target, json=body, headers=acme).status_code
             for _ in range(3)]

    assert first.status_code == 503 and first.get_json()["code"] == 503  # the lost connection
    assert later == [201 if method == "post" else 200] * 3  # a new connection, no restart


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_stuck_database_is_a_503_after_the_statement_timeout(postgres_app, make_app, method):
    """Another session holds a lock on the messages table: the request gives up after
    DATABASE_STATEMENT_TIMEOUT instead of hanging, and the service carries on after."""
    impatient = make_app({"DATABASE_URL": postgres_app.config["DATABASE_URL"],
                          "DATABASE_STATEMENT_TIMEOUT": 300})
    client, acme = impatient.test_client(), make_key(impatient, "acme")
    with postgres_app.app_context():  # the app's engine runs in autocommit: not this one
        blocker = db.engine.connect().execution_options(isolation_level="READ COMMITTED")
        locking = blocker.begin()
        blocker.execute(text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
        try:
            started = time.monotonic()
            response = getattr(client, method)(SMS, json={}, headers=acme)
            waited = time.monotonic() - started
        finally:
            locking.rollback()
            blocker.close()

    assert response.status_code == 503 and response.get_json()["code"] == 503
    assert 0.2 < waited < 5
    assert getattr(client, method)(SMS, json={}, headers=acme).status_code in (200, 201)


def test_a_full_connection_pool_is_a_503_then_recovers(database_url, acme, make_app):
    """Every connection of the pool is in use elsewhere: the request waits
    DATABASE_CONNECT_TIMEOUT for one, then gets a JSON 503 to retry, not a 500."""
    busy_app = make_app({"DATABASE_URL": database_url, "DATABASE_CONNECT_TIMEOUT": 1})
    with busy_app.app_context():
        engine = db.engine
    held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
    try:
        response = busy_app.test_client().get(SMS, headers=acme)
    finally:
        for connection in held:
            connection.close()

    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.get_json()["code"] == 503
    assert busy_app.test_client().get(SMS, headers=acme).status_code == 200
