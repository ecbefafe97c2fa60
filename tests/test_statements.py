"""What each request costs in SQL statements: a constant, whatever the page size, and no
key lookup once a PostgreSQL process has cached the key."""
import pytest
from sqlalchemy import text

from helpers import SMS, assert_refused_from_now_on, create, full_message, on_postgresql, url
from messenger_app.db import db


@pytest.fixture
def key_lookups(backend) -> int:
    """Statements the key lookup adds: none once cached (PostgreSQL), one otherwise."""
    return 0 if on_postgresql(backend) else 1


@pytest.fixture
def warm(client, acme):
    """Messages to work on, and a key its process has looked up once already."""
    return [create(client, acme, full_message())["id"] for _ in range(30)]


@pytest.mark.parametrize("query", [
    "", "page_size=30", "ref_id=ticket-42&ordering=-msg_type&page_size=30",  # ends on it
    "page_size=1", "page=2&page_size=10", "ordering=-id&page_size=29",  # more to come
    "cursor=*&page_size=1", "cursor=*&page_size=30",
])
def test_a_list_costs_one_statement_whatever_its_size(
        client, acme, warm, count_statements, key_lookups, query):
    """The page, with its count in the same statement (see queries.read_page)."""
    with count_statements() as counted:
        response = client.get(f"{SMS}?{query}", headers=acme)
        assert response.status_code == 200 and response.get_json()  # read while counting

    assert counted[0] == 1 + key_lookups


def test_past_the_count_limit_a_page_costs_no_count(app, client, acme, warm, count_statements,
                                                    key_lookups, monkeypatch):
    """A page that ends past LIST_COUNT_LIMIT with more to come has no total to give."""
    monkeypatch.setitem(app.config, "LIST_COUNT_LIMIT", 5)
    with count_statements() as counted:
        response = client.get(f"{SMS}?page=2&page_size=10", headers=acme)

    assert len(response.get_json()) == 10 and "total" not in response.headers["X-Pagination"]
    assert counted[0] == 1 + key_lookups


def test_a_page_past_the_end_counts_for_its_total(client, acme, warm, count_statements,
                                                 key_lookups):
    with count_statements() as counted:
        response = client.get(f"{SMS}?page=5&page_size=10", headers=acme)

    assert response.get_json() == [] and '"total": 30' in response.headers["X-Pagination"]
    assert counted[0] == 2 + key_lookups


@pytest.fixture
def event(backend) -> int:
    """Statements a write's event (outbox) adds: none on PostgreSQL, where it is a
    data-modifying CTE of the write's own statement; an INSERT on SQLite."""
    return 0 if on_postgresql(backend) else 1


@pytest.mark.parametrize("method, body, statements", [
    ("get", None, 1),
    ("patch", {"ref_id": "x"}, 1),  # UPDATE ... RETURNING the message
    ("put", {"ref_id": "x", "is_deleted": True}, 1),
    # UPDATE, then each list: DELETE + INSERT, then SELECT the message (with its event)
    ("patch", {"attachment_ids": ["a"], "sms_data": {"keys": "k"}, "message_read_map": []}, 6),
    ("delete", None, 1),
])
def test_one_message_costs_constant_statements(
        client, acme, warm, count_statements, key_lookups, event, method, body, statements):
    with count_statements() as counted:
        response = getattr(client, method)(url(warm[0]), json=body, headers=acme)

    assert response.status_code < 300
    assert counted[0] == statements + key_lookups + (event if method != "get" else 0)


def test_an_update_that_may_move_a_message_reads_its_organization_first(
        client, admin, warm, count_statements, key_lookups):
    """Its event says where it was (live updates: `deleted` there), read under the row's
    lock: the organization read, the UPDATE, the event."""
    assert client.get(url(warm[0]), headers=admin).status_code == 200  # its key looked up
    with count_statements() as counted:
        assert client.patch(url(warm[0]), json={"organization": "acme"},
                            headers=admin).status_code == 200

    assert counted[0] == 3 + key_lookups


@pytest.mark.parametrize("body, sqlite_statements", [
    ({}, 1), ({"ref_id": "r"}, 1), ({"attachment_ids": ["a"]}, 2),
    (full_message(), 3),  # the message, its attachment ids, its key/value objects
])
def test_a_create_costs_constant_statements(client, acme, warm, count_statements, backend,
                                            key_lookups, body, sqlite_statements):
    with count_statements() as counted:
        assert client.post(SMS, json=body, headers=acme).status_code == 201

    # PostgreSQL: one INSERT with its children and its event in data-modifying CTEs.
    statements = 1 if on_postgresql(backend) else sqlite_statements + 1
    assert counted[0] == statements + key_lookups


def test_a_key_revoked_in_sql_is_refused_without_a_restart(app, client, acme, warm):
    """A DBA revoking by hand: the trigger's NOTIFY empties every process's cache."""
    assert client.get(SMS, headers=acme).status_code == 200

    with app.app_context():
        db.session.execute(text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP"))
        db.session.commit()

    assert_refused_from_now_on(client, acme)


@pytest.mark.parametrize("body, sqlite_statements", [({}, 1), (full_message(), 3)])
def test_an_idempotency_key_adds_two_statements_to_a_create(
        client, acme, warm, count_statements, backend, key_lookups, body, sqlite_statements):
    keyed = {**acme, "Idempotency-Key": "k"}
    with count_statements() as created:
        assert client.post(SMS, json=body, headers=keyed).status_code == 201
    with count_statements() as replayed:
        assert client.post(SMS, json=body, headers=keyed).headers["Idempotent-Replayed"]

    # The claim (on SQLite after a DELETE of expired keys) and the claim marked done in
    # the insert's transaction; a replay: the claim, then reading the stored response.
    purge = 0 if on_postgresql(backend) else 1
    insert = 1 if on_postgresql(backend) else sqlite_statements + 1  # with its event
    assert created[0] == purge + 1 + insert + 1 + key_lookups
    assert replayed[0] == purge + 2 + key_lookups


def test_request_connections_run_without_jit(postgres_app):
    """JIT compiling a list query guessed costly took 100 ms to save nothing (see
    db.make_engine)."""
    with postgres_app.test_request_context():
        assert db.connection().exec_driver_sql("SHOW jit").scalar() == "off"
