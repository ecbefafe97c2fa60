"""The message resource through HTTP: every operation, default, format and write rule of
the contract (sections "The resource" and "Operations")."""
import json
import re
import socket
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Text, create_engine, make_url, text

from helpers import (SMS, STRING_FIELDS, create, full_message, http, make_key,
                     migrated_database, row_counts, url)
from messenger_app.db import db
from messenger_app.models import Message
from messenger_app.schemas import MessageInputSchema, MessageSchema

KEYS_IN_ORDER = [
    "id", "event_time", "communication_id", "msg_type", "type", "user_id",
    "received_config_id", "module_id", "ref_id", "ref_display_id", "is_system_gen",
    "imap_config_id", "attachment_ids", "created_by", "organization", "creation_time",
    "last_update_time", "is_deleted", "is_assignee_read", "message_read_map", "customer_id",
    "customer_entity_id", "is_description", "email_data", "sms_data", "api_data", "beep_data",
]
DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
BOOLEAN_FIELDS = ["is_system_gen", "is_deleted", "is_assignee_read", "is_description"]
INTEGER_FIELDS = ["msg_type", "module_id"]
KEY_VALUE_FIELDS = ["email_data", "sms_data", "api_data", "beep_data"]


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- POST -------------------------------------------------------------------------------

def test_create_with_no_fields_gives_every_default(client, acme):
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    response = client.post(SMS, json={}, headers=acme)

    assert response.status_code == 201
    message = response.get_json()
    assert list(message) == KEYS_IN_ORDER
    assert re.fullmatch(r"[0-9a-f]{24}", message["id"])
    for name in ("event_time", "creation_time", "last_update_time"):
        assert DATE_TIME.match(message[name]), name
        assert before <= parse(message[name]) <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert message["creation_time"] == message["last_update_time"] == message["event_time"]
    for name in STRING_FIELDS + INTEGER_FIELDS + KEY_VALUE_FIELDS:
        assert message[name] is None, name
    for name in BOOLEAN_FIELDS:
        assert message[name] is False, name
    assert message["attachment_ids"] == [] and message["message_read_map"] == []
    assert message["organization"] == "acme"


def test_create_stores_every_field_and_names_the_new_url(client, acme):
    sent = full_message()
    response = client.post(SMS, json=sent, headers=acme)

    assert response.status_code == 201
    created = response.get_json()
    assert list(created) == KEYS_IN_ORDER
    assert {k: created[k] for k in sent} == sent
    assert response.headers["Location"].endswith(url(created["id"]))
    read = client.get(url(created["id"]), headers=acme)
    assert read.status_code == 200 and read.get_json() == created
    assert client.get(response.headers["Location"], headers=acme).get_json() == created


def test_ids_are_time_ordered_object_ids(client, acme):
    ids = [create(client, acme)["id"] for _ in range(5)]

    assert len(set(ids)) == 5
    seconds = int(ids[0][:8], 16)
    assert abs(seconds - datetime.now(timezone.utc).timestamp()) < 60
    assert ids == sorted(ids)  # same process and second: the counter orders them


def test_read_only_keys_in_a_body_are_ignored(client, acme):
    sent = {"id": "0123456789abcdef01234567", "event_time": "2000-01-01T00:00:00.000Z",
            "ref_id": "r"}
    created = create(client, acme, sent)

    assert created["id"] != sent["id"] and created["event_time"] != sent["event_time"]
    assert created["ref_id"] == "r"
    patched = client.patch(url(created["id"]), json=created, headers=acme)
    assert patched.status_code == 200
    assert patched.get_json()["id"] == created["id"]
    assert patched.get_json()["event_time"] == created["event_time"]


@pytest.mark.parametrize("sent, stored", [
    ("2025-08-31T17:55:11.247+02:00", "2025-08-31T15:55:11.247Z"),
    ("2025-08-31T15:55:11.247Z", "2025-08-31T15:55:11.247Z"),
    ("2025-08-31T15:55:11", "2025-08-31T15:55:11.000Z"),
    ("2025-08-31T15:55:11.247999", "2025-08-31T15:55:11.247Z"),
    ("2025-08-31T10:55:11-05:00", "2025-08-31T15:55:11.000Z"),
    ("20250831T155511Z", "2025-08-31T15:55:11.000Z"),
    ("2025-08-31", "2025-08-31T00:00:00.000Z"),
])
def test_date_times_in_any_iso_form_are_stored_as_utc(client, acme, sent, stored):
    created = create(client, acme, {"creation_time": sent, "last_update_time": sent})

    assert created["creation_time"] == stored and created["last_update_time"] == stored
    assert client.get(url(created["id"]), headers=acme).get_json()["creation_time"] == stored


def test_key_value_objects_fill_in_missing_keys(client, acme):
    created = create(client, acme, {
        "email_data": {"keys": "to"},
        "message_read_map": [{"values": "v"}, {}],
    })

    assert created["email_data"] == {"keys": "to", "values": None, "queryparam": False}
    assert created["message_read_map"] == [
        {"keys": None, "values": "v", "queryparam": False},
        {"keys": None, "values": None, "queryparam": False},
    ]


@pytest.mark.parametrize("field", STRING_FIELDS + INTEGER_FIELDS + KEY_VALUE_FIELDS
                         + ["creation_time", "last_update_time"])
def test_nullable_fields_accept_null(client, acme, field):
    created = create(client, acme, {field: None})

    assert created[field] is None
    assert client.get(url(created["id"]), headers=acme).get_json()[field] is None


@pytest.mark.parametrize("field", BOOLEAN_FIELDS + ["attachment_ids", "message_read_map"])
def test_null_is_refused_for_booleans_and_lists(app, client, acme, field):
    response = client.post(SMS, json={field: None}, headers=acme)

    assert response.status_code == 422
    assert field in response.get_json()["errors"]["json"]
    assert row_counts(app) == (0, 0, 0)


@pytest.mark.parametrize("field, value", [
    ("ref_id", True), ("ref_id", ["a"]), ("ref_id", {"a": 1}), ("msg_type", "5.5"),
    ("msg_type", 1.5), ("msg_type", True), ("msg_type", "1e3"), ("msg_type", ""),
    ("module_id", 2**63), ("module_id", -(2**63) - 1), ("module_id", [1]),
    ("is_deleted", "maybe"), ("is_deleted", 2), ("is_deleted", ""), ("is_deleted", [True]),
    ("attachment_ids", "a"), ("attachment_ids", [True]), ("attachment_ids", [None]),
    ("attachment_ids", {"0": "a"}), ("message_read_map", [1]),
    ("message_read_map", {"keys": "k"}), ("email_data", "x"), ("email_data", []),
    ("email_data", {"keys": False}), ("email_data", {"queryparam": None}),
    ("email_data", {"other": "x"}), ("creation_time", "yesterday"),
    ("creation_time", 1700000000), ("last_update_time", "2025-13-01T00:00:00Z"),
    ("ref_id", "nul\x00byte"), ("message_read_map", [{"keys": "nul\x00"}]),
])
def test_values_of_the_wrong_type_are_refused_naming_the_field(app, client, acme, field, value):
    response = client.post(SMS, json={field: value}, headers=acme)

    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == 422 and body["status"] == "Unprocessable Entity"
    assert field in body["errors"]["json"]
    assert row_counts(app) == (0, 0, 0)


def test_a_lone_surrogate_is_not_valid_json(app, client, acme):
    response = client.post(SMS, data='{"ref_id": "lone \\ud800 surrogate"}', headers={
        **acme, "Content-Type": "application/json"})

    assert response.status_code == 400
    assert row_counts(app) == (0, 0, 0)


def test_unknown_keys_are_refused_by_name(app, client, acme):
    response = client.post(SMS, json={"ref_id": "r", "colour": "red"}, headers=acme)

    assert response.status_code == 422
    assert response.get_json()["errors"]["json"] == {"colour": ["Unknown field."]}
    assert row_counts(app) == (0, 0, 0)


@pytest.mark.parametrize("body", [
    {}, full_message(), {"creation_time": None, "msg_type": None, "email_data": None},
    {"creation_time": "2025-01-01T00:00:00.001+05:30", "message_read_map": [{}]},
])
def test_responses_are_what_the_schema_dumps(client, acme, body):
    """The hot paths render without marshmallow; the schema stays the record of the shape."""
    created = create(client, acme, body)
    read = client.get(url(created["id"]), headers=acme).get_json()
    listed = client.get(SMS, headers=acme).get_json()[0]

    values = {name: parse(value) if name.endswith("_time") and value else value
              for name, value in read.items()}
    dumped = MessageSchema().dump(values)
    for response in (created, read, listed):
        assert list(response.items()) == list(dumped.items())


# --- GET one, PUT, PATCH ------------------------------------------------------------------

@pytest.mark.parametrize("method", ["patch", "put"])
def test_update_changes_only_the_fields_sent(client, acme, method):
    created = create(client, acme, full_message())

    response = getattr(client, method)(url(created["id"]), json={"ref_id": "new", "msg_type": None},
                                       headers=acme)

    assert response.status_code == 200
    updated = response.get_json()
    assert list(updated) == KEYS_IN_ORDER
    assert updated["ref_id"] == "new" and updated["msg_type"] is None
    assert parse(updated["last_update_time"]) > parse(created["last_update_time"])
    unchanged = {k: v for k, v in created.items()
                 if k not in ("ref_id", "msg_type", "last_update_time")}
    assert {k: updated[k] for k in unchanged} == unchanged
    assert client.get(url(created["id"]), headers=acme).get_json() == updated


@pytest.mark.parametrize("method", ["patch", "put"])
def test_empty_update_changes_only_last_update_time(client, acme, method):
    created = create(client, acme, full_message())

    updated = getattr(client, method)(url(created["id"]), json={}, headers=acme).get_json()

    assert parse(updated["last_update_time"]) > parse(created["last_update_time"])
    assert {**updated, "last_update_time": None} == {**created, "last_update_time": None}


def test_update_keeps_an_explicit_last_update_time(client, acme):
    created = create(client, acme)

    updated = client.patch(url(created["id"]), json={"last_update_time": "2030-01-02T03:04:05Z"},
                           headers=acme).get_json()

    assert updated["last_update_time"] == "2030-01-02T03:04:05.000Z"


@pytest.mark.parametrize("method", ["patch", "put"])
def test_lists_and_key_value_objects_are_replaced_whole(app, client, acme, method):
    created = create(client, acme, full_message())
    change = {
        "attachment_ids": ["att-9", "att-3"],
        "message_read_map": [{"keys": "only", "values": "one", "queryparam": True}],
        "email_data": None,
        "sms_data": {"values": "+15550199"},
    }

    updated = getattr(client, method)(url(created["id"]), json=change, headers=acme).get_json()

    assert updated["attachment_ids"] == ["att-9", "att-3"]
    assert updated["message_read_map"] == change["message_read_map"]
    assert updated["email_data"] is None
    assert updated["sms_data"] == {"keys": None, "values": "+15550199", "queryparam": False}
    assert updated["api_data"] == created["api_data"]
    assert client.get(url(created["id"]), headers=acme).get_json() == updated
    assert row_counts(app) == (1, 2, 4)  # 1 read-map entry + sms + api + beep


def test_lists_can_be_emptied_and_refilled(client, acme):
    created = create(client, acme, full_message())

    emptied = client.patch(url(created["id"]), json={"attachment_ids": [], "message_read_map": []},
                           headers=acme).get_json()
    refilled = client.patch(url(created["id"]), json={"attachment_ids": ["a", "b", "c", "d"]},
                            headers=acme).get_json()

    assert emptied["attachment_ids"] == [] and emptied["message_read_map"] == []
    assert refilled["attachment_ids"] == ["a", "b", "c", "d"]


def test_invalid_update_changes_nothing(client, acme):
    created = create(client, acme, full_message())

    response = client.patch(url(created["id"]),
                            json={"ref_id": "new", "attachment_ids": None}, headers=acme)

    assert response.status_code == 422
    assert client.get(url(created["id"]), headers=acme).get_json() == created


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
@pytest.mark.parametrize("message_id", [
    "0123456789abcdef01234567",  # well-formed, unknown
    "0123456789ABCDEF01234567", "0123", "not-an-id", "0123456789abcdef012345678",
])
def test_unknown_or_malformed_id_is_404(client, acme, method, message_id):
    create(client, acme)

    response = getattr(client, method)(url(message_id), json={}, headers=acme)

    assert response.status_code == 404
    assert response.get_json()["code"] == 404


# --- DELETE -------------------------------------------------------------------------------

def test_delete_removes_the_message_and_its_rows(app, client, acme):
    kept = create(client, acme, full_message())
    doomed = create(client, acme, full_message())
    assert row_counts(app) == (2, 6, 12)

    response = client.delete(url(doomed["id"]), headers=acme)

    assert response.status_code == 204 and response.data == b""
    assert client.get(url(doomed["id"]), headers=acme).status_code == 404
    assert client.delete(url(doomed["id"]), headers=acme).status_code == 404
    assert row_counts(app) == (1, 3, 6)
    assert client.get(url(kept["id"]), headers=acme).get_json() == kept


def test_answers_without_a_body_have_no_content_type(client, acme):
    """204 and 304 (a replayed DELETE too) carry no Content-Type: there is no content."""
    created = client.post(SMS, json={}, headers=acme)
    target = url(created.get_json()["id"])
    not_modified = client.get(target, headers={**acme, "If-None-Match": created.headers["ETag"]})
    keyed = {**acme, "Idempotency-Key": "delete-once"}
    deleted, replayed = client.delete(target, headers=keyed), client.delete(target, headers=keyed)

    assert [r.status_code for r in (not_modified, deleted, replayed)] == [304, 204, 204]
    assert replayed.headers["Idempotent-Replayed"] == "true"
    for response in (not_modified, deleted, replayed):
        assert "Content-Type" not in response.headers and response.data == b""


def test_rows_cascade_when_a_message_is_deleted_in_sql(app, client, acme):
    """The foreign keys cascade in the database itself, for DBAs deleting by hand."""
    create(client, acme, full_message())

    with app.app_context():
        db.session.execute(text("DELETE FROM messages"))
        db.session.commit()

    assert row_counts(app) == (0, 0, 0)


# --- Atomic writes ------------------------------------------------------------------------

def assert_hidden_500(response):
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == 500 and body["status"] == "Internal Server Error"
    for leak in ("Traceback", "injected failure", "INSERT", "message_key_values"):
        assert leak not in response.get_data(as_text=True)


def test_a_create_that_fails_halfway_leaves_no_rows(app, client, acme, failing_key_value_writes):
    with failing_key_value_writes():
        response = client.post(SMS, json=full_message(), headers=acme)

    assert_hidden_500(response)
    assert row_counts(app) == (0, 0, 0)


@pytest.mark.parametrize("method", ["patch", "put"])
def test_an_update_that_fails_halfway_changes_nothing(app, client, acme, failing_key_value_writes,
                                                      method):
    created = create(client, acme, full_message())
    change = {"ref_id": "new", "attachment_ids": ["x"], "sms_data": {"keys": "changed"},
              "message_read_map": [{"keys": "1"}, {"keys": "2"}, {"keys": "3"}]}

    with failing_key_value_writes():
        response = getattr(client, method)(url(created["id"]), json=change, headers=acme)

    assert_hidden_500(response)
    assert client.get(url(created["id"]), headers=acme).get_json() == created
    assert row_counts(app) == (1, 3, 6)


# --- Errors -------------------------------------------------------------------------------

def assert_error(response, code: int) -> dict:
    assert response.status_code == code
    body = response.get_json()
    assert body["code"] == code and body["status"] and body["message"]
    return body


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_bodies_that_are_not_json_objects(app, client, acme, method):
    created = create(client, acme)
    target = SMS if method == "post" else url(created["id"])
    send = getattr(client, method)
    json_type = {**acme, "Content-Type": "application/json"}

    assert_error(send(target, data="{not json", headers=json_type), 400)
    assert_error(send(target, data="[1, 2]", headers=json_type), 400)
    assert_error(send(target, data="null", headers=json_type), 400)
    assert_error(send(target, data="<ref_id>x</ref_id>", headers={
        **acme, "Content-Type": "application/xml"}), 415)
    assert_error(send(target, data='{"ref_id": "x"}', headers={
        **acme, "Content-Type": "text/plain"}), 415)
    assert client.get(url(created["id"]), headers=acme).get_json() == created
    assert row_counts(app)[0] == 1


def test_an_empty_body_stands_for_an_empty_object(client, acme):
    response = client.post(SMS, headers=acme)

    assert response.status_code == 201 and response.get_json()["ref_id"] is None


def test_method_not_allowed_is_json_with_allow(client, acme):
    body = assert_error(client.put(SMS, json={}, headers=acme), 405)

    assert "method" in body["message"].lower()
    assert set(client.put(SMS, json={}, headers=acme).headers["Allow"].split(", ")) >= {
        "GET", "POST"}


def test_unknown_urls_are_json_404(client, acme):
    for path in ("/", "/ux/", "/ux/common/messenger/email/", f"{SMS}x/y/"):
        assert_error(client.get(path, headers=acme), 404)


def test_validation_errors_name_every_bad_field(client, acme):
    body = assert_error(client.post(SMS, json={"msg_type": "x", "colour": 1}, headers=acme), 422)

    assert set(body["errors"]["json"]) == {"msg_type", "colour"}


def test_the_openapi_document_lists_the_six_operations(client):
    spec = client.get("/openapi.json").get_json()

    assert set(spec["paths"][SMS]) >= {"get", "post"}
    assert set(spec["paths"][f"{SMS}{{message_id}}/"]) >= {"get", "put", "patch", "delete"}
    assert spec["components"]["securitySchemes"]["ApiKey"]["name"] == "Authorization"
    assert list(spec["components"]["schemas"]["Message"]["properties"]) == KEYS_IN_ORDER


# --- Limits -------------------------------------------------------------------------------

WIDEST = "\U0001F600"  # four bytes in UTF-8


INDEXED_STRING_FIELDS = ["organization", "user_id", "ref_id", "customer_id", "communication_id"]


def test_the_indexed_strings_are_those_in_the_indexes():
    """The shorter limit follows the B-tree indexes of the models: no more, no fewer."""
    limited = {name for name, field in MessageInputSchema().fields.items()
               if any(getattr(v, "setting", None) == "MAX_INDEXED_TEXT_LENGTH"
                      for v in field.validators)}
    indexed = {column.name for index in Message.__table__.indexes for column in index.columns
               if isinstance(column.type, Text)}

    assert limited == indexed == set(INDEXED_STRING_FIELDS)


def test_every_indexed_string_at_its_limit_at_once_is_stored(app, client, admin):
    """The widest index entries (two such strings in ix_messages_unread) still fit the
    database's limit: a valid body never fails there."""
    limit = app.config["MAX_INDEXED_TEXT_LENGTH"]
    body = {field: WIDEST * limit for field in INDEXED_STRING_FIELDS}

    created = create(client, admin, body)

    assert {field: created[field] for field in body} == body
    assert client.get(url(created["id"]), headers=admin).get_json() == created


@pytest.mark.parametrize("field", INDEXED_STRING_FIELDS)
def test_an_indexed_string_past_its_limit_is_422(app, client, admin, field):
    too_long = client.post(SMS, json={field: "x" * (app.config["MAX_INDEXED_TEXT_LENGTH"] + 1)},
                           headers=admin)

    assert too_long.status_code == 422 and list(too_long.get_json()["errors"]["json"]) == [field]
    assert row_counts(app) == (0, 0, 0)


LONG_TEXT_BODIES = {
    **{field: lambda text, field=field: {field: text}
       for field in STRING_FIELDS if field not in INDEXED_STRING_FIELDS},
    "attachment_ids": lambda text: {"attachment_ids": [text]},
    "message_read_map": lambda text: {"message_read_map": [
        {"keys": text, "values": text, "queryparam": False}]},
    "sms_data": lambda text: {"sms_data": {"keys": text, "values": text, "queryparam": True}},
}


@pytest.mark.parametrize("field", LONG_TEXT_BODIES)
def test_strings_without_an_index_take_long_text(app, client, acme, field):
    """As MongoDB did: up to MAX_TEXT_LENGTH (100,000) characters, four-byte ones too."""
    limit = app.config["MAX_TEXT_LENGTH"]
    body = LONG_TEXT_BODIES[field](WIDEST * limit)

    response = client.post(SMS, data=json.dumps(body, ensure_ascii=False).encode(), headers={
        **acme, "Content-Type": "application/json"})  # UTF-8, not \u escapes: within 1 MiB
    created = response.get_json()
    assert response.status_code == 201, created
    too_long = client.post(SMS, json=LONG_TEXT_BODIES[field]("x" * (limit + 1)), headers=acme)

    assert created[field] == body[field]
    assert client.get(url(created["id"]), headers=acme).get_json() == created
    assert too_long.status_code == 422 and list(too_long.get_json()["errors"]["json"]) == [field]


@pytest.mark.parametrize("body, field", [
    ({"attachment_ids": ["a"] * 1001}, "attachment_ids"),
    ({"message_read_map": [{}] * 1001}, "message_read_map"),
])
def test_lists_past_their_limits_are_422(app, client, acme, body, field):
    response = client.post(SMS, json=body, headers=acme)

    assert response.status_code == 422
    assert list(response.get_json()["errors"]["json"]) == [field]
    assert row_counts(app) == (0, 0, 0)


def test_long_lists_within_the_limits_are_stored(client, acme):
    body = {"attachment_ids": [str(i) for i in range(1000)],
            "message_read_map": [{"keys": str(i)} for i in range(1000)]}

    created = create(client, acme, body)

    assert client.get(url(created["id"]), headers=acme).get_json() == created
    assert len(created["attachment_ids"]) == 1000 and len(created["message_read_map"]) == 1000


def test_a_body_over_the_size_limit_is_413(app, client, acme):
    response = client.post(SMS, json={"ref_id": "x" * app.config["MAX_CONTENT_LENGTH"]},
                           headers=acme)

    assert_error(response, 413)
    assert row_counts(app) == (0, 0, 0)


# --- What clients can't make the service do ---------------------------------------------

def test_urls_given_to_clients_never_come_from_the_host_header(app, client, acme):
    """A client following `Link: rel="next"` would send its key wherever Host said."""
    hostile = {**acme, "Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    create(client, acme)
    create(client, acme)

    created = client.post(SMS, json={}, headers=hostile)
    listed = client.get(f"{SMS}?page_size=1", headers=hostile)
    cursor = client.get(f"{SMS}?cursor=*&page_size=1", headers=hostile)

    assert created.headers["Location"] == url(created.get_json()["id"])  # relative
    for link in (listed.headers["Link"], cursor.headers["Link"]):
        assert "evil" not in link and "<" + SMS + "?" in link


def test_urls_given_to_clients_begin_with_public_base_url(database_url, acme, make_app):
    public = make_app({"DATABASE_URL": database_url, "PROXY_HOPS": 1,
                       "PUBLIC_BASE_URL": "https://api.example.com/"}).test_client()
    hostile = {**acme, "Host": "evil.example", "X-Forwarded-Host": "evil.example"}

    created = public.post(SMS, json={}, headers=hostile)
    listed = public.get(f"{SMS}?page_size=1", headers=hostile)

    assert created.headers["Location"] == f"https://api.example.com{url(created.get_json()['id'])}"
    assert listed.headers["Link"].startswith(f"<https://api.example.com{SMS}?")


def test_urls_given_to_clients_keep_the_prefix_the_service_is_mounted_at(client, acme):
    """Served under SCRIPT_NAME (gunicorn's, or a proxy's), the Location and Links carry it."""
    mounted = {"SCRIPT_NAME": "/api", "PATH_INFO": SMS}

    created = client.post("/api" + SMS, json={}, headers=acme, environ_overrides=mounted)
    listed = client.get("/api" + SMS, query_string={"page_size": 1}, headers=acme,
                        environ_overrides=mounted)

    assert created.status_code == 201
    assert created.headers["Location"] == "/api" + url(created.get_json()["id"])
    assert listed.headers["Link"].startswith(f"</api{SMS}?")


@pytest.mark.parametrize("creation_time, stored", [
    ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
    ("0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00.000Z"),
    ("2025-06-01T12:00:00+02:00", "2025-06-01T10:00:00.000Z"),
])
def test_a_database_in_another_time_zone_changes_nothing(tmp_path_factory, make_app,
                                                         creation_time, stored):
    """The server (here: the database's default) in Europe/Berlin, where 9999-12-31T23:59Z
    is year 10000: every date-time still reads back, on its own and in lists."""
    url_ = migrated_database("postgresql", tmp_path_factory, "berlin")
    server = create_engine(url_, isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f"ALTER DATABASE \"{make_url(url_).database}\" "
                                "SET timezone TO 'Europe/Berlin'"))
    server.dispose()
    app = make_app({"DATABASE_URL": url_})
    client, headers = app.test_client(), make_key(app, "acme")

    created = create(client, headers, {"creation_time": creation_time})

    assert created["creation_time"] == stored
    assert client.get(url(created["id"]), headers=headers).get_json() == created
    assert client.get(SMS, headers=headers).get_json() == [created]


@pytest.mark.parametrize("creation_time", ["9999-12-31T23:00:00-01:00",
                                           "0001-01-01T00:30:00+01:00"])
def test_date_times_that_could_not_be_shown_are_refused(app, client, acme, creation_time):
    """Past 9999-12-31 or before 0001-01-01 once in UTC: nothing could render them."""
    response = client.post(SMS, json={"creation_time": creation_time}, headers=acme)

    assert response.status_code == 422 and "creation_time" in response.get_json()["errors"]["json"]
    assert row_counts(app) == (0, 0, 0)


def raw_request(base: str, request: bytes) -> tuple[int, dict]:
    """Send `request` as it is to the server at `base`; its status and JSON body."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def chunked_post(key: str, chunks: bytes) -> bytes:
    return (f"POST {SMS} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {key}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n").encode() + chunks


def as_chunks(body: bytes, size: int = 65536) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


def test_chunked_bodies_are_read_whole_or_refused(service):
    """gunicorn decodes Transfer-Encoding: chunked; a broken encoding is a 400, a body past
    the size limit a 413 (no Content-Length tells werkzeug so: it used to cut the body off
    at the limit and store what was there), and a good one is stored."""
    key = make_key(service.app, "chunked")["Authorization"]
    limit = service.app.config["MAX_CONTENT_LENGTH"]

    broken = raw_request(service.base, chunked_post(key, b"zz\r\n{}\r\n0\r\n\r\n"))
    too_big = raw_request(service.base, chunked_post(key, as_chunks(
        b'{"ref_id": "big"}' + b" " * (3 * limit))))
    good = raw_request(service.base, chunked_post(key, as_chunks(b'{"ref_id": "ok"}', 4)))
    listed = json.loads(http("GET", f"{service.base}{SMS}", {"Authorization": key})[2])

    assert broken[0] == 400 and broken[1]["code"] == 400
    assert too_big[0] == 413 and too_big[1]["code"] == 413
    assert good[0] == 201 and good[1]["ref_id"] == "ok"
    assert [message["ref_id"] for message in listed] == ["ok"]


@pytest.mark.parametrize("request_line, headers, status", [
    ("GET /healthz HTTP/1.1 extra", "", 400),
    ("G@T /healthz HTTP/1.1", "", 400),
    (f"GET /healthz?{'q' * 5000} HTTP/1.1", "", 414),
    ("GET /healthz HTTP/1.1", f"X-Big: {'b' * 9000}\r\n", 431),
    ("GET /healthz HTTP/1.1", "".join(f"X-{n}: n\r\n" for n in range(120)), 431),
])
def test_requests_the_server_cannot_read_get_json_errors(service, request_line, headers,
                                                         status):
    """Refused by gunicorn before the app sees them, yet in the API's error form."""
    answered, body = raw_request(service.base, (
        f"{request_line}\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n").encode())

    assert answered == status and body["code"] == status and body["message"]


@pytest.mark.parametrize("path, status", [
    (SMS.rstrip("/"), 200), ("/ux//common/messenger/sms/", 404)])
def test_no_path_is_redirected(client, acme, path, status):
    """werkzeug would redirect these, with an HTML body and a Location from Host."""
    response = client.get(path, headers={**acme, "Host": "evil.example"})

    assert response.status_code == status and response.is_json
    assert "Location" not in response.headers
