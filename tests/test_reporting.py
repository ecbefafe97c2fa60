"""The reporting views (migration 0007) and the ten queries of docs/reporting.md, against
messages stored through the API whose answers are worked out by hand below."""
import json
import secrets
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import ProgrammingError

from helpers import (SMS, dispose_app, documented_queries, documented_role_statements, make_key,
                     migrated_database)
from messenger_app import create_app
from messenger_app.db import db

EMPTY = {"keys": None, "values": None, "queryparam": False}


def read_by(*users: str) -> list[dict]:
    return [{"keys": user, "values": "read", "queryparam": False} for user in users]


# name: (organization, created (UTC unless said), minutes until last update, other fields)
MESSAGES = {
    "a1": ("acme", "2026-10-01T08:00:00Z", 30, {
        "type": "inbound", "module_id": 1, "customer_id": "c1", "user_id": "u1",
        "attachment_ids": ["x", "y"], "email_data": EMPTY,
        "message_read_map": read_by("u1", "u2")}),
    "a2": ("acme", "2026-10-01T23:59:59.999Z", 10, {
        "type": "outbound", "module_id": 1, "customer_id": "c1", "user_id": "u1",
        "is_system_gen": True, "is_assignee_read": True,
        "sms_data": {"keys": "to", "values": "+15550100", "queryparam": True},
        "message_read_map": read_by("u1")}),
    "a3": ("acme", "2026-10-02T00:00:00Z", 60, {
        "type": "inbound", "module_id": 2, "customer_id": "c2", "user_id": "u2",
        "attachment_ids": ["z"], "sms_data": EMPTY,
        "email_data": {"keys": "from", "values": "a@example.com", "queryparam": False}}),
    "a4": ("acme", "2026-10-31T23:00:00Z", 0, {
        "type": "inbound", "customer_id": "c1", "user_id": "u1", "is_system_gen": True,
        "is_deleted": True, "message_read_map": read_by("u2")}),
    "a5": ("acme", "2026-10-15T12:00:00-05:00", 20, {
        "type": "outbound", "module_id": 2, "customer_id": "c3", "user_id": "u2",
        "attachment_ids": ["p"], "beep_data": EMPTY, "message_read_map": read_by("u1")}),
    "a6": ("acme", "2026-09-30T23:59:00Z", 5, {"type": "inbound", "module_id": 1,
                                               "customer_id": "c2", "user_id": "u1"}),
    "a7": ("acme", "2026-11-01T00:00:00Z", 5, {"type": "inbound", "user_id": "u3"}),
    "g1": ("globex", "2026-10-05T10:00:00Z", 5, {"type": "inbound", "user_id": "u9",
                                                 "is_system_gen": True}),
    "g2": ("globex", "2026-10-05T11:00:00Z", 15, {"type": "outbound", "user_id": "u9",
                                                  "is_assignee_read": True}),
}


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def utc(text_: str) -> datetime:
    return datetime.fromisoformat(text_).astimezone(timezone.utc)


# The expected rows of the queries of docs/reporting.md, in order.
EXPECTED = [
    [(date(2026, 10, 1), 2), (date(2026, 10, 2), 1), (date(2026, 10, 15), 1),
     (date(2026, 10, 31), 1)],
    [("acme", 5, 1), ("globex", 2, 0)],
    [(1, 2), (2, 2), (None, 1)],
    [("c1", 2), ("c2", 1), ("c3", 1)],  # a4 (c1) is deleted
    [("acme", 2, 5, Decimal("40.0")), ("globex", 1, 2, Decimal("50.0"))],
    [(3, 5, 4)],
    [("acme", minutes(20), minutes(60)), ("globex", minutes(10), minutes(15))],
    [("u1", 2, utc("2026-09-30T23:59:00Z")), ("u2", 2, utc("2026-10-02T00:00:00Z")),
     ("u3", 1, utc("2026-11-01T00:00:00Z"))],
    [(2, 2, 0, 1)],
    [("u1", 3), ("u2", 2)],
]


def store_messages(app) -> dict[str, str]:
    """Store MESSAGES through the API; their ids by name."""
    client, admin = app.test_client(), make_key(app, None)
    ids = {}
    for name, (organization, created, updated_after, fields) in MESSAGES.items():
        last_update = utc(created) + minutes(updated_after)
        body = {**fields, "organization": organization, "creation_time": created,
                "last_update_time": last_update.isoformat()}
        response = client.post(SMS, json=body, headers=admin)
        assert response.status_code == 201, response.get_json()
        ids[name] = response.get_json()["id"]
    return ids


@pytest.fixture(scope="module")
def reporting_app(tmp_path_factory):
    url = migrated_database("postgresql", tmp_path_factory, "reporting")
    app = create_app({"DATABASE_URL": url, "TESTING": True})
    store_messages(app)
    yield app
    dispose_app(app)


def rows(app, sql: str) -> list[tuple]:
    with app.app_context(), db.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_the_document_has_ten_queries():
    assert len(documented_queries()) == len(EXPECTED) == 10


@pytest.mark.parametrize("number", range(1, 11))
def test_documented_query_gives_the_expected_rows(reporting_app, number):
    assert rows(reporting_app, documented_queries()[number - 1]) == EXPECTED[number - 1]


def test_the_queries_are_right_in_any_session_time_zone(reporting_app):
    with reporting_app.app_context(), db.engine.connect() as connection:
        connection.execute(text("SET TIME ZONE 'America/New_York'"))
        for sql, expected in zip(documented_queries(), EXPECTED):
            assert [tuple(row) for row in connection.execute(text(sql))] == expected
        connection.rollback()


# --- The analysts' read-only role (PostgreSQL) ---------------------------------------------

@pytest.fixture(scope="module")
def analyst(reporting_app):
    """An engine that connects as an analyst, made as docs/reporting.md says; its roles (of
    names no one else uses) are dropped afterwards."""
    url = make_url(reporting_app.config["DATABASE_URL"])
    suffix = secrets.token_hex(4)
    roles = (f"test_analyst_{suffix}", f"test_reader_{suffix}")
    administrator = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with administrator.connect() as connection:
            connection.exec_driver_sql(documented_role_statements(roles[1], roles[0],
                                                                  url.database))
        engine = create_engine(url.set(username=roles[0], password="change me"))
        yield engine
        engine.dispose()
    finally:
        with administrator.connect() as connection:
            for role in roles:
                if connection.scalar(text("SELECT count(*) FROM pg_roles WHERE rolname = :r"),
                                     {"r": role}):
                    connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
                    connection.exec_driver_sql(f'DROP ROLE "{role}"')
        administrator.dispose()


def test_an_analyst_runs_the_documented_queries_and_reads_every_view(analyst, reporting_app):
    with analyst.connect() as connection:
        for sql, expected in zip(documented_queries(), EXPECTED):
            assert [tuple(row) for row in connection.execute(text(sql))] == expected
        for relation in ("message_report", "message_daily_counts", "unread_per_assignee",
                         "messages", "message_attachments", "message_key_values"):
            count = f"SELECT count(*) FROM {relation}"
            assert connection.scalar(text(count)) == rows(reporting_app, count)[0][0] > 0
        assert connection.scalar(text("SHOW statement_timeout")) == "5min"


@pytest.mark.parametrize("statement", [
    "SELECT key_digest FROM api_keys",
    "SELECT response_body FROM idempotency_keys",
    "INSERT INTO messages (id, event_time) VALUES ('0123456789abcdef01234567', now())",
    "UPDATE messages SET is_deleted = true",
    "DELETE FROM message_attachments",
    "TRUNCATE message_key_values",
    "CREATE TABLE notes (note text)",
])
def test_an_analyst_can_not_write_nor_read_keys_and_stored_responses(analyst, statement):
    with analyst.connect() as connection:
        with pytest.raises(ProgrammingError, match="permission denied"):
            connection.exec_driver_sql(statement)


# --- The views on both databases ----------------------------------------------------------

def view_rows(app, sql: str) -> list[dict]:
    with app.app_context(), db.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(sql))]


def test_message_report_flattens_a_message(app):
    ids = store_messages(app)

    (a3,) = view_rows(app, f"SELECT * FROM message_report WHERE id = '{ids['a3']}'")
    (a1,) = view_rows(app, f"SELECT * FROM message_report WHERE id = '{ids['a1']}'")

    assert (a3["email_keys"], a3["email_values"], bool(a3["email_queryparam"])) == (
        "from", "a@example.com", False)
    assert (a3["sms_keys"], a3["sms_values"], bool(a3["sms_queryparam"])) == (None, None, False)
    assert (a3["api_keys"], a3["api_queryparam"], a3["beep_queryparam"]) == (None, None, None)
    assert (a3["attachment_count"], a3["read_map_count"]) == (1, 0)
    assert (a3["organization"], a3["customer_id"], a3["module_id"]) == ("acme", "c2", 2)
    assert (a1["attachment_count"], a1["read_map_count"]) == (2, 2)
    read_map = a1["read_map"]
    read_map = read_map if isinstance(read_map, list) else json.loads(read_map)  # SQLite: text
    assert read_map == read_by("u1", "u2")
    assert len(view_rows(app, "SELECT id FROM message_report")) == len(MESSAGES)


def test_message_daily_counts_counts_per_organization_type_and_utc_day(app):
    store_messages(app)

    counts = view_rows(app, "SELECT organization, type, day, messages, system_generated,"
                            " deleted FROM message_daily_counts WHERE organization = 'acme'"
                            " ORDER BY day, type")

    assert [(str(c["day"]), c["type"], c["messages"], c["system_generated"], c["deleted"])
            for c in counts] == [
        ("2026-09-30", "inbound", 1, 0, 0),
        ("2026-10-01", "inbound", 1, 0, 0),
        ("2026-10-01", "outbound", 1, 1, 0),
        ("2026-10-02", "inbound", 1, 0, 0),
        ("2026-10-15", "outbound", 1, 0, 0),
        ("2026-10-31", "inbound", 1, 1, 1),
        ("2026-11-01", "inbound", 1, 0, 0),
    ]


def test_unread_per_assignee_leaves_out_read_and_deleted_messages(app):
    store_messages(app)

    unread = view_rows(app, "SELECT organization, assignee, unread FROM unread_per_assignee"
                            " ORDER BY organization, assignee")

    assert [tuple(row.values()) for row in unread] == [
        ("acme", "u1", 2), ("acme", "u2", 2), ("acme", "u3", 1), ("globex", "u9", 1)]
