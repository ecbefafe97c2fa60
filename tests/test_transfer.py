"""`flask import-mongo` (mongoexport dumps of the original collection) and `flask export`:
Extended JSON, bad documents, idempotency, batches, and export -> import identity."""
import os
import subprocess
import sys

import orjson
import pytest
from sqlalchemy import text

from helpers import SMS, dispose_app, full_message, make_key, migrated_database, row_counts, url
from messenger_app import create_app
from messenger_app.config import PROJECT_ROOT
from messenger_app.db import db


def object_id(n: int) -> str:
    return f"{0x5E5B8A00 + n:08x}0a1b2c3d4e{n:06x}"


# As mongoexport writes them by default (Extended JSON v2, relaxed): dates as ISO strings
# (before 1970 as milliseconds), numbers plain; fields never set are left out (mongoengine).
RELAXED = {
    "_id": {"$oid": object_id(1)},
    "event_time": {"$date": "2020-03-01T10:20:30.456Z"},
    "communication_id": "comm-1", "msg_type": 2, "type": "outbound", "user_id": "user-7",
    "module_id": 14, "ref_id": "ticket-42", "is_system_gen": True,
    "attachment_ids": ["att-2", "att-1"], "organization": "acme",
    "creation_time": {"$date": "2020-03-01T12:20:30.4567+02:00"},
    "last_update_time": {"$date": {"$numberLong": "-86400001"}},
    "message_read_map": [{"keys": "user-7", "values": "read", "queryparam": False},
                         {"keys": "user-8", "values": None, "queryparam": True}],
    "sms_data": {"keys": "to", "values": "+15550100", "queryparam": True},
    "email_data": None,
}
RELAXED_MESSAGE = {
    "id": object_id(1), "event_time": "2020-03-01T10:20:30.456Z",
    "communication_id": "comm-1", "msg_type": 2, "type": "outbound", "user_id": "user-7",
    "received_config_id": None, "module_id": 14, "ref_id": "ticket-42",
    "ref_display_id": None, "is_system_gen": True, "imap_config_id": None,
    "attachment_ids": ["att-2", "att-1"], "created_by": None, "organization": "acme",
    "creation_time": "2020-03-01T10:20:30.456Z", "last_update_time": "1969-12-30T23:59:59.999Z",
    "is_deleted": False, "is_assignee_read": False,
    "message_read_map": [{"keys": "user-7", "values": "read", "queryparam": False},
                         {"keys": "user-8", "values": None, "queryparam": True}],
    "customer_id": None, "customer_entity_id": None, "is_description": False,
    "email_data": None, "sms_data": {"keys": "to", "values": "+15550100", "queryparam": True},
    "api_data": None, "beep_data": None,
}
# mongoexport --jsonFormat=canonical: every number and date wrapped. No creation or update
# time: both are the time the message was stored, as the API sets them at creation.
CANONICAL = {
    "_id": {"$oid": object_id(2).upper()},
    "event_time": {"$date": {"$numberLong": "1583058030457"}},
    "msg_type": {"$numberInt": "-3"}, "module_id": {"$numberLong": "9223372036854775807"},
    "is_deleted": True, "organization": "globex", "attachment_ids": [],
    "beep_data": {"keys": {"$oid": "5E5B8A00AAAAAAAAAAAAAAAA"}, "queryparam": False},
}
CANONICAL_MESSAGE = {
    **dict.fromkeys(RELAXED_MESSAGE), "id": object_id(2), "event_time": "2020-03-01T10:20:30.457Z",
    "msg_type": -3, "module_id": 9223372036854775807, "is_system_gen": False, "attachment_ids": [],
    "organization": "globex", "creation_time": "2020-03-01T10:20:30.457Z",
    "last_update_time": "2020-03-01T10:20:30.457Z", "is_deleted": True,
    "is_assignee_read": False, "message_read_map": [], "is_description": False,
    "beep_data": {"keys": "5e5b8a00aaaaaaaaaaaaaaaa", "values": None, "queryparam": False},
}
# Older tools' legacy dates, `{"$date": milliseconds}`, and a time without an offset (UTC).
LEGACY = {"_id": {"$oid": object_id(3)}, "event_time": {"$date": 1583058030458},
          "creation_time": "2020-03-01T10:20:30", "last_update_time": None}


def write_lines(path, *documents) -> str:
    """A JSON-lines file; a document that is bytes is written as it is (a bad line)."""
    path.write_bytes(b"".join(
        (document if isinstance(document, bytes) else orjson.dumps(document)) + b"\n"
        for document in documents))
    return str(path)


def import_file(runner, path, *options):
    return runner.invoke(args=["import-mongo", str(path), *options])


def stored_message(client, headers, message_id: str):
    response = client.get(url(message_id), headers=headers)
    return response.get_json() if response.status_code == 200 else response.status_code


def test_extended_json_relaxed_canonical_and_legacy(runner, client, admin, tmp_path):
    path = write_lines(tmp_path / "dump.json", RELAXED, CANONICAL, LEGACY)

    result = import_file(runner, path)

    assert result.exit_code == 0, result.output
    assert "done: 3 read, 3 imported, 0 skipped (stored already), 0 bad" in result.stderr
    assert stored_message(client, admin, object_id(1)) == RELAXED_MESSAGE
    assert stored_message(client, admin, object_id(2)) == CANONICAL_MESSAGE
    legacy = stored_message(client, admin, object_id(3))
    assert (legacy["event_time"], legacy["creation_time"], legacy["last_update_time"]) == (
        "2020-03-01T10:20:30.458Z", "2020-03-01T10:20:30.000Z", None)


def planner_statistics(app, backend):
    """When `messages` was last analyzed by hand on PostgreSQL (not by autovacuum; None if
    never); on SQLite, its row count in sqlite_stat1 (None without one)."""
    sql = {"postgresql": "SELECT last_analyze FROM pg_stat_user_tables"
                         " WHERE relname = 'messages'",
           "sqlite": "SELECT stat FROM sqlite_stat1 WHERE idx = 'ix_messages_organization_id'"}
    with app.app_context(), db.engine.begin() as connection:
        if backend == "sqlite":
            exists = connection.scalar(text(
                "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"))
            stat = connection.scalar(text(sql["sqlite"])) if exists else None
            return stat and stat.split()[0]  # the index: "rows, rows per key ..."
        return connection.scalar(text(sql["postgresql"]))


def test_an_import_leaves_fresh_planner_statistics(app, runner, backend, tmp_path):
    """With stale statistics after a bulk load, the planner can pick slow plans until
    autovacuum gets round to the table; the import analyzes what it wrote."""
    if backend == "sqlite":  # earlier tests' imports left statistics: start without
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS sqlite_stat1"))
    before = planner_statistics(app, backend)

    path = write_lines(tmp_path / "dump.json", RELAXED, CANONICAL, LEGACY)
    assert import_file(runner, path).exit_code == 0

    after = planner_statistics(app, backend)
    assert after is not None and after != before
    if backend == "sqlite":
        assert after == "3"  # the three messages


def test_json_array_streams_elements_and_reports_them_by_index(runner, client, admin,
                                                               tmp_path):
    path = tmp_path / "dump.json"  # mongoexport --jsonArray --pretty: not one line each
    bad = {"_id": {"$oid": object_id(9)}, "event_time": {"$date": "2020-03-01T00:00:00Z"},
           "is_deleted": "maybe"}
    path.write_bytes(orjson.dumps([RELAXED, bad, CANONICAL], option=orjson.OPT_INDENT_2))

    result = import_file(runner, path, "--jsonArray")

    assert result.exit_code == 1
    assert "element 1: is_deleted: Not a valid boolean." in result.stderr
    assert "done: 3 read, 2 imported, 0 skipped (stored already), 1 bad" in result.stderr
    assert stored_message(client, admin, object_id(1)) == RELAXED_MESSAGE
    assert stored_message(client, admin, object_id(2)) == CANONICAL_MESSAGE
    assert stored_message(client, admin, object_id(9)) == 404


def test_json_array_cut_short_keeps_what_came_before(runner, client, admin, tmp_path):
    path = tmp_path / "dump.json"
    path.write_bytes(orjson.dumps([RELAXED, CANONICAL])[:-40])

    result = import_file(runner, path, "--jsonArray")

    assert result.exit_code == 1
    assert "element 1: not valid JSON: parse error: premature EOF" in result.stderr
    assert stored_message(client, admin, object_id(1)) == RELAXED_MESSAGE
    lines = import_file(runner, write_lines(tmp_path / "lines.json", RELAXED), "--jsonArray")
    assert "element 0: not a JSON array (leave out --jsonArray" in lines.stderr


def test_importing_twice_stores_nothing_twice_and_leaves_stored_messages_alone(
        app, runner, client, admin, tmp_path):
    path = write_lines(tmp_path / "dump.json", RELAXED, CANONICAL, LEGACY)
    assert import_file(runner, path).exit_code == 0
    counts = row_counts(app)
    changed = {**RELAXED, "ref_id": "changed", "attachment_ids": ["other"]}

    again = import_file(runner, write_lines(tmp_path / "again.json", changed, CANONICAL, LEGACY))

    assert again.exit_code == 0, again.output
    assert "done: 3 read, 0 imported, 3 skipped (stored already), 0 bad" in again.stderr
    assert row_counts(app) == counts == (3, 2, 4)
    assert stored_message(client, admin, object_id(1)) == RELAXED_MESSAGE


def test_bad_documents_are_reported_by_line_and_the_good_ones_stored(runner, client, admin,
                                                                     tmp_path):
    def document(n, **fields):
        return {"_id": {"$oid": object_id(n)}, "event_time": {"$date": "2021-01-01T00:00:00Z"},
                **fields}

    path = write_lines(
        tmp_path / "dump.json",
        document(1, ref_id="first"),                                   # 1: good
        b'{"_id": {"$oid": "5e5b8a000a1b2c3d4e000002"}, "ref_id": ',   # 2: cut short
        document(3, msg_type="5.5"),                                   # 3: wrong type
        {"_id": {"$oid": "not-an-object-id"}, "event_time": "2021-01-01T00:00:00Z"},  # 4
        {"id": "5E5B8A000A1B2C3D4E000005", "event_time": "2021-01-01T00:00:00Z"},     # 5
        document(1, ref_id="again"),                                   # 6: id of line 1
        b"",                                                           # (blank: skipped)
        document(8, message_read_map=[{"keys": "k", "queryparam": "nope"}], colour="red"),
        document(9, msg_type={"$numberDouble": "2.5"}, attachment_ids=[{"$binary": {
            "base64": "AA==", "subType": "00"}}]),                     # 9: not these types
        {"_id": {"$oid": object_id(10)}, "ref_id": "no event_time"},   # 10
        [document(11)],                                                # 11: not an object
        document(12, ref_id="last"),                                   # 12: good
    )

    result = import_file(runner, path)

    assert result.exit_code == 1
    reported = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert reported == [
        "line 2: not valid JSON: unexpected end of data at column 58",
        "line 3: msg_type: Not a valid integer.",
        'line 4: _id: not a valid $oid: {"$oid":"not-an-object-id"}',
        'line 5: id: not an ObjectId (24 hexadecimal digits): "5E5B8A000A1B2C3D4E000005"',
        "line 8: message_read_map.0.queryparam: Not a valid boolean.; colour: Unknown field.",
        "line 9: attachment_ids.0: $binary values can't be imported (not a type of these "
        "fields)",
        "line 10: event_time: Missing data for required field.",
        "line 11: not a JSON object",
        f"line 6: id: {object_id(1)} again (first at line 1)",
    ]
    assert "done: 11 read, 2 imported, 0 skipped (stored already), 9 bad" in result.stderr
    assert stored_message(client, admin, object_id(1))["ref_id"] == "first"
    assert stored_message(client, admin, object_id(12))["ref_id"] == "last"
    assert [stored_message(client, admin, object_id(n)) for n in (3, 8, 9, 10)] == [404] * 4


def test_small_batches_report_progress_and_find_an_id_repeated_batches_later(
        app, runner, tmp_path):
    documents = [{"_id": {"$oid": object_id(n)}, "event_time": "2022-05-05T05:05:05.005Z",
                  "attachment_ids": [f"a{n}"], "sms_data": {"values": str(n)}}
                 for n in range(34)]
    path = write_lines(tmp_path / "dump.json", *documents, documents[2])

    result = import_file(runner, path, "--batch-size", "10")

    assert result.exit_code == 1
    progress = [line for line in result.stderr.splitlines() if " read, " in line]
    # A batch is counted once written, while the next one is being read.
    assert [line.split(";")[0] for line in progress] == [
        "20 read, 10 imported, 0 skipped (stored already), 0 bad",
        "30 read, 20 imported, 0 skipped (stored already), 0 bad",
        "done: 35 read, 34 imported, 0 skipped (stored already), 1 bad",
    ]
    assert all(line.endswith(" documents/s") for line in progress)
    assert f"line 35: id: {object_id(2)} again (first at line 3)" in result.stderr
    assert row_counts(app) == (34, 34, 34)


def test_import_from_standard_input_through_the_flask_command(database_url, client, admin):
    env = {**os.environ, "DATABASE_URL": database_url}
    dump = orjson.dumps(RELAXED) + b"\n" + orjson.dumps(CANONICAL) + b"\n{}\n"

    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "import-mongo", "-"],
                          cwd=PROJECT_ROOT, env=env, input=dump, capture_output=True)

    assert done.returncode == 1
    assert b"line 3: id: missing or null" in done.stderr
    assert stored_message(client, admin, object_id(2)) == CANONICAL_MESSAGE


# --- export -> import -------------------------------------------------------------------

@pytest.fixture(scope="session")
def empty_app(backend, tmp_path_factory):
    """A second app, on an empty database of the same backend, to import into."""
    url = migrated_database(backend, tmp_path_factory, "transfer")
    app = create_app({"DATABASE_URL": url, "TESTING": True})
    yield app
    dispose_app(app)


@pytest.fixture
def target(empty_app):
    yield empty_app
    with empty_app.app_context(), db.engine.begin() as connection:
        connection.execute(text("DELETE FROM messages"))
        connection.execute(text("DELETE FROM api_keys"))


def varied_messages(client, admin) -> list[str]:
    """Messages with every kind of value: all fields set, defaults, nulls, null times,
    empty and long lists, text beyond ASCII; and one imported with an old id."""
    bodies = [
        full_message("acme"),
        {},
        {"organization": "globex", "creation_time": None, "last_update_time": None,
         "ref_id": "Grüße 👋 \u2028", "attachment_ids": [f"att-{i}" for i in range(30)],
         "message_read_map": [{"keys": None, "values": "x" * 2000}, {}],
         "email_data": {"keys": None, "values": None}, "sms_data": None},
        {"organization": "acme", "creation_time": "1999-12-31T23:59:59.999+05:30",
         "msg_type": -(2**31), "module_id": 2**31 - 1, "is_deleted": True},
    ]
    ids = []
    for body in bodies:
        response = client.post(SMS, json=body, headers=admin)
        assert response.status_code == 201
        ids.append(response.get_json()["id"])
    return ids


def test_export_then_import_into_an_empty_database_answers_the_same(
        app, runner, client, admin, target, tmp_path):
    imported = write_lines(tmp_path / "dump.json", RELAXED, CANONICAL, LEGACY)
    assert import_file(runner, imported).exit_code == 0
    ids = sorted(varied_messages(client, admin) + [object_id(n) for n in (1, 2, 3)])

    exported = runner.invoke(args=["export", str(tmp_path / "export.json")])
    result = import_file(target.test_cli_runner(), tmp_path / "export.json")

    assert exported.exit_code == 0 and "exported 7 messages" in exported.stderr
    assert result.exit_code == 0, result.output
    assert "done: 7 read, 7 imported, 0 skipped" in result.stderr
    target_client, target_admin = target.test_client(), make_key(target, None)
    for message_id in ids:
        assert (stored_message(target_client, target_admin, message_id) ==
                stored_message(client, admin, message_id))
    listing = f"{SMS}?ordering=id&page_size=100"
    assert (target_client.get(listing, headers=target_admin).get_json() ==
            client.get(listing, headers=admin).get_json())
    assert row_counts(target) == row_counts(app)


def test_export_writes_the_api_objects_in_id_order_one_organization_if_asked(
        runner, client, admin, tmp_path):
    ids = varied_messages(client, admin)
    assert import_file(runner, write_lines(tmp_path / "dump.json", RELAXED)).exit_code == 0

    everything = runner.invoke(args=["export", "-", "--batch-size", "2"])
    acme = runner.invoke(args=["export", "-", "--organization", "acme"])

    lines = [orjson.loads(line) for line in everything.stdout_bytes.splitlines()]
    assert [line["id"] for line in lines] == sorted(ids + [object_id(1)])
    assert lines == [stored_message(client, admin, line["id"]) for line in lines]
    assert [orjson.loads(line) for line in acme.stdout_bytes.splitlines()] == [
        line for line in lines if line["organization"] == "acme"]
    assert "exported 5 messages" in everything.stderr
    assert "exported 3 messages" in acme.stderr
