"""Safe retries (README, "Safe retries"): a write sent with an Idempotency-Key is applied
once; a retry gets the first answer again, byte for byte. Parallel retries against
gunicorn are in test_concurrency.py, statement counts in test_statements.py."""
import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from helpers import SMS, create, full_message, make_key, row_counts, url
from messenger_app import idempotency
from messenger_app import queries
from messenger_app.db import db
from messenger_app.models import IdempotencyKey

REPLAYED = "Idempotent-Replayed"


def keyed(headers: dict, key: str = "retry-1") -> dict:
    return {**headers, "Idempotency-Key": key}


def stored_keys(app) -> list[tuple[str, str, str]]:
    """(scope, key, state) of every stored Idempotency-Key."""
    with app.app_context():
        rows = db.session.execute(select(
            IdempotencyKey.scope, IdempotencyKey.idempotency_key, IdempotencyKey.state
        ).order_by(IdempotencyKey.idempotency_key))
        return [tuple(row) for row in rows]


def assert_replay_of(response, first) -> None:
    assert response.status_code == first.status_code
    assert response.get_data() == first.get_data()
    for header in ("Content-Type", "Location", "ETag"):
        assert response.headers.get(header) == first.headers.get(header), header
    assert response.headers[REPLAYED] == "true" and REPLAYED not in first.headers


@pytest.fixture
def clock(monkeypatch):
    """`clock.advance(seconds)`: the time idempotency keys are claimed and expire at."""

    class Clock:
        offset = timedelta()

        def advance(self, seconds: float) -> None:
            self.offset += timedelta(seconds=seconds)

    clock, real_now = Clock(), idempotency.now
    monkeypatch.setattr(idempotency, "now", lambda: real_now() + clock.offset)
    return clock


# --- Replays ----------------------------------------------------------------------------

def test_a_retried_post_gets_the_first_answer_and_creates_nothing(app, client, acme):
    body = full_message()
    first = client.post(SMS, json=body, headers=keyed(acme))
    # The same JSON object, spaced and ordered otherwise: the same request.
    retry = client.post(SMS, data=json.dumps(dict(reversed(body.items())), indent=2),
                        headers={**keyed(acme), "Content-Type": "application/json"})

    assert first.status_code == 201
    assert_replay_of(retry, first)
    assert row_counts(app) == (1, 3, 6)
    assert stored_keys(app) == [("org:acme", "retry-1", "done")]


def test_without_a_key_every_post_creates(app, client, acme):
    create(client, acme)
    create(client, acme)

    assert row_counts(app)[0] == 2 and stored_keys(app) == []


def test_put_patch_and_delete_with_a_key_are_applied_once(app, client, acme):
    created = create(client, acme)
    for method, change in (("patch", {"ref_id": "patched"}), ("put", {"type": "put"})):
        first = getattr(client, method)(url(created["id"]), json=change,
                                        headers=keyed(acme, method))
        retry = getattr(client, method)(url(created["id"]), json=change,
                                        headers=keyed(acme, method))
        assert first.status_code == 200
        assert_replay_of(retry, first)
    assert client.get(url(created["id"]), headers=acme).headers["ETag"] == '"3"'  # two writes

    deleted = client.delete(url(created["id"]), headers=keyed(acme, "delete"))
    retry = client.delete(url(created["id"]), headers=keyed(acme, "delete"))

    assert deleted.status_code == 204
    assert_replay_of(retry, deleted)
    assert client.delete(url(created["id"]), headers=acme).status_code == 404
    assert row_counts(app) == (0, 0, 0)


# --- The same key for another request ---------------------------------------------------

@pytest.mark.parametrize("method, target, body, differing", [
    ("post", "collection", {"ref_id": "other"}, "the body differs"),
    ("patch", "message", {"ref_id": "first"}, "the method and path differ"),
    ("put", "message", {"ref_id": "other"}, "the method, path and body differ"),
    ("delete", "message", None, "the method, path and body differ"),
])
def test_the_same_key_for_another_request_is_422_naming_the_difference(
        app, client, acme, method, target, body, differing):
    first = client.post(SMS, json={"ref_id": "first"}, headers=keyed(acme))
    created = create(client, acme)
    path = SMS if target == "collection" else url(created["id"])

    response = getattr(client, method)(path, json=body, headers=keyed(acme))

    assert response.status_code == 422
    error = response.get_json()
    assert differing in error["message"] and f"POST {SMS}" in error["message"]
    assert differing in error["errors"]["headers"]["Idempotency-Key"][0]
    assert client.get(url(created["id"]), headers=acme).get_json() == created  # unchanged
    assert row_counts(app)[0] == 2
    assert_replay_of(client.post(SMS, json={"ref_id": "first"}, headers=keyed(acme)), first)


def test_each_organization_has_its_own_keys(app, client, acme, globex, admin):
    acme_first = client.post(SMS, json={}, headers=keyed(acme))
    globex_first = client.post(SMS, json={}, headers=keyed(globex))
    admin_first = client.post(SMS, json={}, headers=keyed(admin))
    other_admin_first = client.post(SMS, json={}, headers=keyed(make_key(app, None)))

    firsts = (acme_first, globex_first, admin_first, other_admin_first)
    assert [response.status_code for response in firsts] == [201] * 4
    assert len({response.get_json()["id"] for response in firsts}) == 4
    assert [response.get_json()["organization"] for response in firsts] == [
        "acme", "globex", None, None]
    # Another key of acme's shares acme's keys; an all-organizations key has its own.
    assert_replay_of(client.post(SMS, json={}, headers=keyed(make_key(app, "acme"))),
                     acme_first)
    assert_replay_of(client.post(SMS, json={}, headers=keyed(globex)), globex_first)
    assert_replay_of(client.post(SMS, json={}, headers=keyed(admin)), admin_first)
    assert row_counts(app)[0] == 4
    assert [scope for scope, _, _ in stored_keys(app)].count("org:acme") == 1


# --- Failures are not stored ------------------------------------------------------------

@pytest.mark.parametrize("body, status", [
    ({"msg_type": "not a number"}, 422),  # refused before the key is claimed
    ({"organization": "globex"}, 403),  # refused after
])
def test_a_refused_write_is_not_stored_and_the_key_stays_free(app, client, acme, body, status):
    refused = client.post(SMS, json=body, headers=keyed(acme))

    assert refused.status_code == status
    assert stored_keys(app) == [] and row_counts(app)[0] == 0
    assert client.post(SMS, json={"ref_id": "fixed"}, headers=keyed(acme)).status_code == 201


def test_an_update_of_an_unknown_message_is_not_stored(app, client, acme):
    for method in ("patch", "put", "delete"):
        response = getattr(client, method)(url("0" * 24), json={}, headers=keyed(acme))
        assert response.status_code == 404 and REPLAYED not in response.headers
    assert stored_keys(app) == []


def test_a_5xx_is_not_stored_and_a_retry_succeeds(app, client, acme, failing_key_value_writes):
    with failing_key_value_writes():
        failed = client.post(SMS, json=full_message(), headers=keyed(acme))

    assert failed.status_code == 500
    assert stored_keys(app) == [] and row_counts(app) == (0, 0, 0)
    retry = client.post(SMS, json=full_message(), headers=keyed(acme))
    assert retry.status_code == 201 and REPLAYED not in retry.headers
    assert row_counts(app) == (1, 3, 6)


def test_a_503_is_not_stored_and_a_retry_succeeds(app, client, acme, monkeypatch):
    def unavailable(*_args):
        raise OperationalError("INSERT", {}, Exception("the database went away"))

    with monkeypatch.context() as patched:
        patched.setattr(queries, "insert_message", unavailable)
        failed = client.post(SMS, json={}, headers=keyed(acme))

    assert failed.status_code == 503 and failed.headers["Retry-After"] == "1"
    assert stored_keys(app) == []
    assert client.post(SMS, json={}, headers=keyed(acme)).status_code == 201


@pytest.mark.parametrize("key", ["x" * 256, "", "with space", "naïve", "tab\there"])
def test_a_key_that_is_not_1_to_255_visible_ascii_characters_is_422(app, client, acme, key):
    response = client.post(SMS, json={}, headers=keyed(acme, key))

    assert response.status_code == 422
    assert "Idempotency-Key" in response.get_json()["errors"]["headers"]
    assert row_counts(app)[0] == 0 and stored_keys(app) == []


def test_a_key_of_255_visible_ascii_characters_is_fine(app, client, acme):
    key = "".join(chr(33 + i % 94) for i in range(255))

    first = client.post(SMS, json={}, headers=keyed(acme, key))

    assert first.status_code == 201
    assert_replay_of(client.post(SMS, json={}, headers=keyed(acme, key)), first)


# --- Requests at the same time ----------------------------------------------------------

def run_during_the_insert(monkeypatch, action):
    """Make `action()` run while the next POST is between its claim and its insert."""
    real_insert = queries.insert_message
    pending = [action]

    def insert(message):
        if pending:
            thread = threading.Thread(target=pending.pop())
            thread.start()
            thread.join()
        real_insert(message)

    monkeypatch.setattr(queries, "insert_message", insert)


def test_a_repeat_while_the_first_still_runs_is_409(app, client, acme, monkeypatch):
    repeats = []
    run_during_the_insert(monkeypatch, lambda: repeats.append(
        app.test_client().post(SMS, json={}, headers=keyed(acme))))

    first = client.post(SMS, json={}, headers=keyed(acme))

    assert first.status_code == 201
    (repeat,) = repeats
    assert repeat.status_code == 409 and repeat.headers["Retry-After"] == "1"
    assert "still running" in repeat.get_json()["message"]
    assert row_counts(app)[0] == 1
    assert_replay_of(client.post(SMS, json={}, headers=keyed(acme)), first)


def test_a_stale_claim_is_taken_over_and_its_late_write_undone(app, client, acme, monkeypatch,
                                                               clock):
    """A claim in flight for longer than IDEMPOTENCY_STALE_SECONDS is taken to be a crashed
    worker's. If its request was only slow, its write is rolled back when it finishes."""
    takeovers = []

    def retry_much_later():
        clock.advance(app.config["IDEMPOTENCY_STALE_SECONDS"] + 1)
        takeovers.append(app.test_client().post(SMS, json={}, headers=keyed(acme)))

    run_during_the_insert(monkeypatch, retry_much_later)

    slow = client.post(SMS, json={}, headers=keyed(acme))

    (takeover,) = takeovers
    assert takeover.status_code == 201 and REPLAYED not in takeover.headers
    assert slow.status_code == 409
    listed = client.get(SMS, headers=acme).get_json()
    assert [message["id"] for message in listed] == [takeover.get_json()["id"]]
    assert_replay_of(client.post(SMS, json={}, headers=keyed(acme)), takeover)


def test_a_stale_claim_taken_over_is_no_longer_its_first_owners(app, client, acme, monkeypatch,
                                                                clock):
    """The takeover still runs when the slow first request finishes: the claim is the
    takeover's (it is told apart by its time), so the slow write is the one undone."""
    real_insert = queries.insert_message
    takeover_claimed, slow_finished = threading.Event(), threading.Event()
    takeovers = []

    def insert(message):
        if message["ref_id"] == "slow":
            clock.advance(app.config["IDEMPOTENCY_STALE_SECONDS"] + 1)
            retry.start()
            assert takeover_claimed.wait(timeout=10)
        else:
            takeover_claimed.set()
            assert slow_finished.wait(timeout=10)
        real_insert(message)

    retry = threading.Thread(target=lambda: takeovers.append(app.test_client().post(
        SMS, json={"ref_id": "takeover"}, headers=keyed(acme))))
    monkeypatch.setattr(queries, "insert_message", insert)
    monkeypatch.setitem(app.config, "IDEMPOTENCY_TTL_SECONDS", 3600)

    slow = client.post(SMS, json={"ref_id": "slow"}, headers=keyed(acme))
    slow_finished.set()
    retry.join()

    assert slow.status_code == 409
    (takeover,) = takeovers
    assert takeover.status_code == 201
    assert [m["ref_id"] for m in client.get(SMS, headers=acme).get_json()] == ["takeover"]


# --- Expiry -----------------------------------------------------------------------------

def test_a_key_expires_after_the_configured_time(app, client, acme, monkeypatch, clock):
    monkeypatch.setitem(app.config, "IDEMPOTENCY_TTL_SECONDS", 60)
    first = client.post(SMS, json={}, headers=keyed(acme))

    clock.advance(59)
    assert_replay_of(client.post(SMS, json={}, headers=keyed(acme)), first)
    clock.advance(1)
    again = client.post(SMS, json={"ref_id": "new"}, headers=keyed(acme))

    assert again.status_code == 201 and REPLAYED not in again.headers
    assert again.get_json()["id"] != first.get_json()["id"]
    assert row_counts(app)[0] == 2 and len(stored_keys(app)) == 1


def test_claims_delete_expired_keys_as_they_go(app, client, acme, globex, monkeypatch, clock):
    monkeypatch.setitem(app.config, "IDEMPOTENCY_TTL_SECONDS", 60)
    for key in ("a", "b"):
        client.post(SMS, json={}, headers=keyed(acme, key))
    client.post(SMS, json={}, headers=keyed(globex, "c"))
    clock.advance(30)
    client.post(SMS, json={}, headers=keyed(acme, "d"))
    clock.advance(30)

    client.post(SMS, json={}, headers=keyed(acme, "e"))

    # Every organization's expired keys go; "d" has 30 s to live.
    assert stored_keys(app) == [("org:acme", "d", "done"), ("org:acme", "e", "done")]


def test_the_purge_command_deletes_every_expired_key(app, client, runner, acme, monkeypatch,
                                                     clock):
    monkeypatch.setitem(app.config, "IDEMPOTENCY_TTL_SECONDS", 60)
    for key in ("a", "b", "c"):
        client.post(SMS, json={}, headers=keyed(acme, key))
    clock.advance(30)
    client.post(SMS, json={}, headers=keyed(acme, "d"))
    clock.advance(30)

    result = runner.invoke(args=["idempotency", "purge"])

    assert result.exit_code == 0 and "Deleted 3 expired idempotency keys." in result.output
    assert stored_keys(app) == [("org:acme", "d", "done")]


def test_claims_look_for_expired_keys_through_the_index(postgres_app):
    """Every claim looks for expired keys: through ix_idempotency_keys_expires_at, also on
    a table whose statistics were never gathered (a scan of 17,000 live keys instead cost
    15 ms a claim in the benchmark, and grew with the table)."""
    now = idempotency.now()
    values = {"owner": "org:acme", "key": "k", "method": "POST", "path": SMS, "digest": "d",
              "now": now, "expires": now + timedelta(days=1), "stale_before": now}
    with postgres_app.app_context(), db.engine.connect() as connection:
        connection.execute(text(
            "INSERT INTO idempotency_keys (scope, idempotency_key, request_method,"
            " request_path, body_digest, state, created_at, expires_at, response_body)"
            " SELECT 'org:acme', 'key-' || n, 'POST', '/', 'd', 'done', now(),"
            " now() + interval '1 day', convert_to(repeat('x', 1000), 'UTF8')"
            " FROM generate_series(1, 20000) AS n"))
        connection.commit()
        try:
            claim = idempotency.claim_statement("postgresql").compile(dialect=connection.dialect)
            plan = "\n".join(connection.exec_driver_sql(
                f"EXPLAIN {claim}", {**claim.params, **values}).scalars())
        finally:
            connection.execute(text("DELETE FROM idempotency_keys"))
            connection.commit()

    assert "Index Scan using ix_idempotency_keys_expires_at" in plan, plan


# --- Documentation ----------------------------------------------------------------------

def test_the_openapi_document_describes_the_header_on_every_write(client):
    spec = client.get("/openapi.json").get_json()
    writes = [spec["paths"][SMS]["post"]] + [
        spec["paths"][f"{SMS}{{message_id}}/"][method] for method in ("put", "patch", "delete")]

    for operation in writes:
        (parameter,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert parameter["in"] == "header" and not parameter["required"]
        assert parameter["schema"]["maxLength"] == 255
        success = next(response for status, response in operation["responses"].items()
                       if status.startswith("2"))
        assert REPLAYED in success["headers"]
        assert {"409", "422"} <= set(operation["responses"])



def test_a_key_is_free_again_after_its_connection_was_lost_mid_write(postgres_app,
                                                                       monkeypatch):
    """The request's own backend dies inside the write: a 503, and a retry with the same
    key runs afresh at once (not a 409 for a claim left in flight)."""
    client, headers = postgres_app.test_client(), make_key(postgres_app, "lost-connection")
    real_insert = queries.insert_message

    def dying_insert(message):
        db.connection().execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        real_insert(message)

    with monkeypatch.context() as patched:
        patched.setattr(queries, "insert_message", dying_insert)
        failed = client.post(SMS, json={"ref_id": "r"}, headers=keyed(headers))
    retry = client.post(SMS, json={"ref_id": "r"}, headers=keyed(headers))

    assert failed.status_code == 503
    assert retry.status_code == 201 and REPLAYED not in retry.headers
    assert len(client.get(SMS, headers=headers).get_json()) == 1
