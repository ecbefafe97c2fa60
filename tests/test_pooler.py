"""The service through PgBouncer in transaction pooling mode (Debian's 1.18, made by the
tests: tests/clusters.py), with DATABASE_TRANSACTION_POOLING, and what needs a session of
its own going to PostgreSQL directly (DATABASE_SESSION_URL)."""
import pytest
from alembic import command
from sqlalchemy import create_engine, make_url, text

from helpers import (SMS, alembic_config, assert_refused_from_now_on, create, full_message,
                     make_key, url)

DATABASE = "messenger_pooled"


@pytest.fixture(scope="module")
def pooled_database(primary_server, pgbouncer) -> str:
    primary_server.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    primary_server.execute(f'CREATE DATABASE "{DATABASE}"')
    # Through the pooler, sessions keep the database's settings: a time zone not UTC shows
    # that the service's date-times don't depend on it.
    primary_server.execute(f"ALTER DATABASE \"{DATABASE}\" SET timezone = 'Europe/Berlin'")
    command.upgrade(alembic_config(primary_server.url(DATABASE)), "head")
    return primary_server.url(DATABASE)


def pooled_app(make_app, pgbouncer, direct_url: str | None, **config):
    return make_app({"DATABASE_URL": pgbouncer.url(DATABASE),
                     "DATABASE_TRANSACTION_POOLING": True,
                     "DATABASE_SESSION_URL": direct_url or "", **config})


def test_every_operation_works_through_the_pooler(make_app, pgbouncer, pooled_database):
    app = pooled_app(make_app, pgbouncer, pooled_database)
    client, acme = app.test_client(), make_key(app, "acme")
    # More than five runs of each statement: psycopg would have prepared them by then.
    ids = [create(client, acme, full_message())["id"] for _ in range(7)]
    for message_id in ids:
        assert client.get(url(message_id), headers=acme).status_code == 200
        patched = client.patch(url(message_id), json={"ref_id": "p", "attachment_ids": ["x"]},
                               headers=acme)
        assert patched.status_code == 200 and patched.get_json()["attachment_ids"] == ["x"]
    for query in ("", "?cursor=*&page_size=2", "?page=2&page_size=3", "?ref_id=p"):
        assert client.get(SMS + query, headers=acme).status_code == 200
    keyed = {**acme, "Idempotency-Key": "pooled"}
    first = client.post(SMS, json={}, headers=keyed)
    assert client.post(SMS, json={}, headers=keyed).get_data() == first.get_data()
    for message_id in ids:
        assert client.delete(url(message_id), headers=acme).status_code == 204
    created = client.post(SMS, json={"creation_time": "9999-12-31T23:59:59.999Z"}, headers=acme)
    assert client.get(url(created.get_json()["id"]), headers=acme).get_json()[
        "creation_time"] == "9999-12-31T23:59:59.999Z"


def test_key_revocation_listens_around_the_pooler(make_app, pgbouncer, pooled_database):
    app = pooled_app(make_app, pgbouncer, pooled_database)
    client, acme = app.test_client(), make_key(app, "acme")
    assert client.get(SMS, headers=acme).status_code == 200
    assert app.extensions["api_key_cache"].listener is not None  # on PostgreSQL itself

    engine = create_engine(pooled_database)
    with engine.begin() as connection:
        connection.execute(text("UPDATE api_keys SET revoked_at = now()"))
    engine.dispose()

    assert_refused_from_now_on(client, acme)


def test_without_a_session_url_keys_are_looked_up_each_time(make_app, pgbouncer,
                                                            pooled_database, tmp_path):
    app = pooled_app(make_app, pgbouncer, None)
    client, acme = app.test_client(), make_key(app, "acme")
    assert client.get(SMS, headers=acme).status_code == 200
    assert app.extensions["api_key_cache"].listener is None

    engine = create_engine(pooled_database)
    with engine.begin() as connection:
        connection.execute(text("UPDATE api_keys SET revoked_at = now()"))
    engine.dispose()
    assert client.get(SMS, headers=acme).status_code == 401  # at once: no cache

    dump = tmp_path / "dump.jsonl"
    dump.write_text('{"_id": {"$oid": "68b4707f2e5b5c1f0a8c9d01"}}\n')
    imported = app.test_cli_runner().invoke(args=["import-mongo", str(dump)])
    assert imported.exit_code != 0 and "DATABASE_SESSION_URL" in imported.output


def test_import_goes_around_the_pooler(make_app, pgbouncer, pooled_database, tmp_path):
    app = pooled_app(make_app, pgbouncer, pooled_database)
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(f'{{"_id": {{"$oid": "68b4707f2e5b5c1f0a8c9d{n:02x}"}}, '
                            '"event_time": {"$date": "2025-08-31T15:55:11.247Z"}}\n'
                            for n in range(3)))

    imported = app.test_cli_runner().invoke(args=["import-mongo", str(dump)])

    assert imported.exit_code == 0, imported.output
    assert "3 imported" in imported.output


def test_without_the_setting_the_pooler_refuses_the_service(make_app, pgbouncer,
                                                            pooled_database):
    """The startup options the service sends PostgreSQL itself (jit, timezone, timeouts)
    are refused by PgBouncer: DATABASE_TRANSACTION_POOLING is what makes it work."""
    app = make_app({"DATABASE_URL": pgbouncer.url(DATABASE), "PROPAGATE_EXCEPTIONS": False})
    client = app.test_client()

    assert client.get("/readyz").status_code == 503


@pytest.mark.parametrize("backend", ["pgbouncer"], indirect=True)
def test_the_suites_pgbouncer_backend_goes_through_pgbouncer(backend, app, client, acme,
                                                              suite_pgbouncer):
    """Every test on the `app` fixture runs a third time with its requests through a
    PgBouncer in transaction pooling mode: its own counters show them."""
    database = make_url(app.config["DATABASE_URL"]).database

    def transactions() -> int:
        stats = {row["database"]: row for row in suite_pgbouncer.admin("SHOW STATS")}
        return int(stats[database]["total_xact_count"])

    before = transactions()
    for _ in range(3):
        assert client.get(url(create(client, acme)["id"]), headers=acme).status_code == 200

    assert make_url(app.config["DATABASE_URL"]).port == suite_pgbouncer.port
    assert transactions() - before >= 6
