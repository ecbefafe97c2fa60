"""The contract's "Reading values the way the original did": what the original service's
Django REST framework fields and parsers took (rest_framework/fields.py and utils/html.py,
3.15), taken the same way: trimmed strings, DRF's coercions in JSON bodies too, 64-bit
integers, form and multipart bodies, ids in URLs in either case."""
from io import BytesIO
from urllib.parse import urlencode

import pytest
from marshmallow import ValidationError, fields
from werkzeug.datastructures import MultiDict
from werkzeug.test import encode_multipart

from helpers import SMS, STRING_FIELDS, create, full_message, row_counts, url
from messenger_app.schemas import KeyValue, KeyValueInputSchema

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
PADDED = " \t\n text \u00a0\r\n"  # str.strip() takes Unicode whitespace too, as DRF did


def form_pairs(body: dict) -> list[tuple[str, str]]:
    """`body` as an HTML form sends it, by DRF's rules: lists as repeated keys (read-map
    entries as `[N]key` keys), key/value objects as dotted keys, booleans as text."""
    pairs = []
    for name, value in body.items():
        if name == "message_read_map":
            pairs += [(f"{name}[{i}]{key}", text(item_value))
                      for i, item in enumerate(value) for key, item_value in item.items()]
        elif isinstance(value, list):
            pairs += [(name, text(item)) for item in value]
        elif isinstance(value, dict):
            pairs += [(f"{name}.{key}", text(item_value)) for key, item_value in value.items()]
        else:
            pairs.append((name, text(value)))
    return pairs


def text(value) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def send(client, method: str, target: str, headers: dict, body, encoding: str = "json"):
    """A request with `body` as JSON, as a urlencoded form or as multipart form data;
    `body` is a dict, or for forms also a list of (key, value) pairs."""
    send_method = getattr(client, method)
    if encoding == "json":
        return send_method(target, json=body, headers=headers)
    pairs = form_pairs(body) if isinstance(body, dict) else body
    if encoding == "form":
        return send_method(target, data=urlencode(pairs), headers=headers, content_type=FORM)
    return send_method(target, data=MultiDict(pairs), headers=headers, content_type=MULTIPART)


def write(client, headers, method: str, body, encoding: str = "json") -> dict:
    """POST `body`, or create a message and PUT or PATCH `body` onto it; the response."""
    target = SMS if method == "post" else url(create(client, headers)["id"])
    response = send(client, method, target, headers, body, encoding)
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()


WRITE_PATHS = [(method, encoding) for method in ("post", "put", "patch")
               for encoding in ("json", "form", "multipart")]


# --- Strings are trimmed ----------------------------------------------------------------

@pytest.mark.parametrize("method, encoding", WRITE_PATHS)
def test_every_string_is_trimmed_on_every_write_path(client, acme, method, encoding):
    padded = {field: PADDED for field in STRING_FIELDS}
    padded |= {"attachment_ids": [PADDED, "  b "], "organization": " acme ",
               "message_read_map": [{"keys": PADDED, "values": PADDED}],
               "email_data": {"keys": PADDED, "values": PADDED},
               "beep_data": {"keys": " k", "values": "v\n"}}

    written = write(client, acme, method, padded, encoding)

    assert {field: written[field] for field in STRING_FIELDS} == dict.fromkeys(STRING_FIELDS,
                                                                              "text")
    assert written["attachment_ids"] == ["text", "b"] and written["organization"] == "acme"
    assert written["message_read_map"] == [{"keys": "text", "values": "text",
                                            "queryparam": False}]
    assert written["email_data"] == {"keys": "text", "values": "text", "queryparam": False}
    assert written["beep_data"] == {"keys": "k", "values": "v", "queryparam": False}
    assert client.get(url(written["id"]), headers=acme).get_json() == written


def test_a_string_of_whitespace_is_stored_blank(client, acme):
    """DRF refused a blank string (400); the contract lets the service accept it."""
    assert create(client, acme, {"ref_id": " \t "})["ref_id"] == ""


# --- DRF's coercions, in JSON bodies ----------------------------------------------------

@pytest.mark.parametrize("sent, stored", [
    (5, 5), ("5", 5), ("5.0", 5), (5.0, 5), (" 7 ", 7), ("-3", -3), ("+4", 4), ("8.", 8),
    ("9.000 ", 9), (1e2, 100),
])
def test_integer_fields_take_what_drf_took(client, acme, sent, stored):
    created = create(client, acme, {"msg_type": sent, "module_id": sent})

    assert created["msg_type"] == stored and created["module_id"] == stored


@pytest.mark.parametrize("sent", ["5.5", "1e3", "five", "", " ", True, False, 5.5, 1e16, [5],
                                  {"n": 5}, "1" * 1001])
def test_integer_fields_refuse_what_drf_refused(app, client, acme, sent):
    response = client.post(SMS, json={"msg_type": sent}, headers=acme)

    assert response.status_code == 422
    assert list(response.get_json()["errors"]["json"]) == ["msg_type"]
    assert row_counts(app) == (0, 0, 0)


TRUE_SPELLINGS = [True, 1, 1.0, "true", "True", "TRUE", "t", "T", "yes", "Yes", "y", "on",
                  "ON", "1"]
FALSE_SPELLINGS = [False, 0, 0.0, "false", "False", "FALSE", "f", "F", "no", "No", "n", "off",
                   "OFF", "0"]


@pytest.mark.parametrize("sent, stored", [(v, True) for v in TRUE_SPELLINGS]
                         + [(v, False) for v in FALSE_SPELLINGS])
def test_boolean_fields_take_drfs_spellings(client, acme, sent, stored):
    created = create(client, acme, {"is_deleted": sent,
                                    "sms_data": {"keys": "k", "queryparam": sent}})

    assert created["is_deleted"] is stored and created["sms_data"]["queryparam"] is stored


@pytest.mark.parametrize("sent", ["maybe", "tru", "", "null", 2, -1, 0.5, [], {}, [True]])
def test_boolean_fields_refuse_anything_else(app, client, acme, sent):
    response = client.post(SMS, json={"is_assignee_read": sent}, headers=acme)

    assert response.status_code == 422
    assert list(response.get_json()["errors"]["json"]) == ["is_assignee_read"]
    assert row_counts(app) == (0, 0, 0)


@pytest.mark.parametrize("sent, stored", [(5, "5"), (-12, "-12"), (5.5, "5.5"), (5.0, "5.0"),
                                          (2**63 - 1, "9223372036854775807")])
def test_string_fields_take_a_number_as_its_text(client, acme, sent, stored):
    created = create(client, acme, {"ref_id": sent, "attachment_ids": [sent],
                                    "email_data": {"keys": sent, "values": sent}})

    assert created["ref_id"] == stored and created["attachment_ids"] == [stored]
    assert created["email_data"] == {"keys": stored, "values": stored, "queryparam": False}


@pytest.mark.parametrize("sent", [True, False, [], ["a"], {}, {"a": "b"}])
def test_string_fields_refuse_booleans_lists_and_objects(app, client, acme, sent):
    response = client.post(SMS, json={"ref_id": sent}, headers=acme)

    assert response.status_code == 422 and "ref_id" in response.get_json()["errors"]["json"]
    assert row_counts(app) == (0, 0, 0)


@pytest.mark.parametrize("sent, stored", [
    ("2025-8-31 5:05", "2025-08-31T05:05:00.000Z"),
    ("2025-08-31T15:55:11,247Z", "2025-08-31T15:55:11.247Z"),
    ("2025-08-31 15:55:11 +02:00", "2025-08-31T13:55:11.000Z"),
    ("2025-08-31T15:55:11.1234567-0130", "2025-08-31T17:25:11.123Z"),
])
def test_date_times_in_the_forms_django_read(client, acme, sent, stored):
    """Django's parse_datetime took these besides ISO 8601 proper."""
    assert create(client, acme, {"creation_time": sent})["creation_time"] == stored


# --- 64-bit integers --------------------------------------------------------------------

BIGGEST, SMALLEST = 2**63 - 1, -(2**63)


def test_64_bit_integers_round_trip(client, acme):
    created = create(client, acme, {"msg_type": BIGGEST, "module_id": SMALLEST})
    patched = client.patch(url(created["id"]), json={"module_id": str(BIGGEST - 1)},
                           headers=acme).get_json()

    assert created["msg_type"] == BIGGEST and created["module_id"] == SMALLEST
    assert patched["msg_type"] == BIGGEST and patched["module_id"] == BIGGEST - 1
    assert client.get(url(created["id"]), headers=acme).get_json() == patched
    assert client.get(SMS, headers=acme).get_json() == [patched]


@pytest.mark.parametrize("query, expected", [
    (f"msg_type={BIGGEST}", ["biggest"]),
    (f"msg_type={SMALLEST}", ["smallest"]),
    (f"msg_type__gt={2**31}", ["biggest", "big"]),
    (f"msg_type__gte={BIGGEST}", ["biggest"]),
    (f"msg_type__lt={-(2**31)}", ["smallest"]),
    (f"msg_type__lte={SMALLEST}", ["smallest"]),
    (f"module_id__gte={2**40}&module_id__lt={BIGGEST}", ["big"]),
    ("ordering=-msg_type", ["biggest", "big", "small", "smallest"]),
])
def test_filters_and_ranges_on_64_bit_values(client, acme, query, expected):
    values = {"smallest": SMALLEST, "biggest": BIGGEST, "small": 7, "big": 2**40}
    ids = {create(client, acme, {"msg_type": value, "module_id": value})["id"]: name
           for name, value in values.items()}

    response = client.get(f"{SMS}?{query}", headers=acme)

    assert response.status_code == 200
    assert [ids[message["id"]] for message in response.get_json()] == expected


@pytest.mark.parametrize("query", [f"msg_type={2**63}", f"module_id__lt={-(2**63) - 1}"])
def test_filters_past_64_bits_are_422(client, acme, query):
    response = client.get(f"{SMS}?{query}", headers=acme)

    assert response.status_code == 422
    assert list(response.get_json()["errors"]["query"]) == [query.split("=")[0]]


@pytest.mark.parametrize("sent", [2**63, -(2**63) - 1, str(2**63), 2**64 + 1])
def test_integers_past_64_bits_are_422(app, client, acme, sent):
    response = client.post(SMS, json={"module_id": sent}, headers=acme)

    assert response.status_code == 422 and "module_id" in response.get_json()["errors"]["json"]
    assert row_counts(app) == (0, 0, 0)


# --- Form and multipart bodies ----------------------------------------------------------

@pytest.mark.parametrize("method, encoding", [(m, e) for m, e in WRITE_PATHS if e != "json"])
def test_a_form_writes_every_field(client, acme, method, encoding):
    """Every field, lists and key/value objects included, as a form sends them: the same
    message as the same body in JSON."""
    body = full_message()

    written = write(client, acme, method, body, encoding)

    assert {name: written[name] for name in body} == body
    assert client.get(url(written["id"]), headers=acme).get_json() == written


@pytest.mark.parametrize("encoding", ["form", "multipart"])
@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_form_update_changes_only_the_fields_sent(client, acme, encoding, method):
    created = create(client, acme, full_message())

    response = send(client, method, url(created["id"]), acme,
                    [("ref_id", "new"), ("sms_data.values", "+15550199"),
                     ("is_deleted", "off")], encoding)

    updated = response.get_json()
    assert response.status_code == 200, updated
    assert updated["ref_id"] == "new" and updated["is_deleted"] is False
    assert updated["sms_data"] == {"keys": None, "values": "+15550199", "queryparam": False}
    unchanged = {k: v for k, v in created.items()
                 if k not in ("ref_id", "sms_data", "is_deleted", "last_update_time")}
    assert {k: updated[k] for k in unchanged} == unchanged


@pytest.mark.parametrize("encoding", ["form", "multipart"])
@pytest.mark.parametrize("pairs, stored", [
    ([("attachment_ids", "a"), ("attachment_ids", "b")], ["a", "b"]),
    ([("attachment_ids[2]", "c"), ("attachment_ids[0]", "a"), ("attachment_ids[10]", "d")],
     ["a", "c", "d"]),  # by index, gaps closed
    ([("attachment_ids[0]", "x"), ("attachment_ids", "a")], ["a"]),  # repeated keys win
    ([("attachment_ids", "")], [""]),
])
def test_form_lists_from_repeated_or_indexed_keys(client, acme, encoding, pairs, stored):
    written = write(client, acme, "post", pairs, encoding)

    assert written["attachment_ids"] == stored


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_form_read_map_entries_from_indexed_keys(client, acme, encoding):
    written = write(client, acme, "post", [
        ("message_read_map[1]keys", "user-8"), ("message_read_map[0]keys", "user-7"),
        ("message_read_map[0]values", "read"), ("message_read_map[1]queryparam", "on"),
        ("message_read_map[5]values", ""),
    ], encoding)

    assert written["message_read_map"] == [
        {"keys": "user-7", "values": "read", "queryparam": False},
        {"keys": "user-8", "values": None, "queryparam": True},
        {"keys": None, "values": None, "queryparam": False},
    ]


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_an_empty_form_value_is_null_or_not_sent(client, acme, encoding):
    """As DRF read HTML input: null where the field takes it; a boolean keeps its value."""
    created = create(client, acme, full_message())

    response = send(client, "patch", url(created["id"]), acme, [
        ("ref_id", ""), ("msg_type", ""), ("creation_time", ""), ("is_deleted", ""),
        ("email_data.keys", ""), ("email_data.queryparam", "")], encoding)

    updated = response.get_json()
    assert response.status_code == 200, updated
    assert updated["ref_id"] is None and updated["msg_type"] is None
    assert updated["creation_time"] is None and updated["is_deleted"] is True
    assert updated["email_data"] == {"keys": None, "values": None, "queryparam": False}


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_the_last_of_a_repeated_form_key_counts(client, acme, encoding):
    written = write(client, acme, "post", [("ref_id", "a"), ("ref_id", "b"),
                                           ("email_data.keys", "x"), ("email_data.keys", "y")],
                    encoding)

    assert written["ref_id"] == "b" and written["email_data"]["keys"] == "y"


@pytest.mark.parametrize("encoding", ["form", "multipart"])
@pytest.mark.parametrize("pairs, errors", [
    ([("colour", "red")], {"colour": ["Unknown field."]}),
    ([("email_data.colour", "red")], {"email_data": {"colour": ["Unknown field."]}}),
    ([("message_read_map[0]colour", "red")],
     {"message_read_map": {"0": {"colour": ["Unknown field."]}}}),
    ([("is_deleted", "maybe")], {"is_deleted": ["Not a valid boolean."]}),
    ([("msg_type", "5.5")], {"msg_type": ["Not a valid integer."]}),
    ([("attachment_ids[0]keys", "a")], {"attachment_ids": {"0": ["Not a valid string."]}}),
])
def test_a_bad_form_is_422_naming_the_field_and_changes_nothing(app, client, acme, encoding,
                                                                 pairs, errors):
    response = send(client, "post", SMS, acme, pairs, encoding)

    assert response.status_code == 422
    assert response.get_json()["errors"]["json"] == errors
    assert row_counts(app) == (0, 0, 0)


@pytest.mark.parametrize("content_type, body", [
    (MULTIPART, b"ref_id=a"),  # no boundary
    (f"{MULTIPART}; boundary=b", b"--b\r\nContent-Disposition: form-data; name=ref_id"),
    # a part's name that werkzeug can't read (found by schemathesis: it was a 500)
    (f"{MULTIPART}; boundary=b",
     b'--b\r\nContent-Disposition: form-data; name="\r"\r\n\r\nnull\r\n--b--\r\n'),
])
def test_a_malformed_form_is_400_and_changes_nothing(app, client, acme, content_type, body):
    response = client.post(SMS, data=body, headers={**acme, "Content-Type": content_type})

    assert response.status_code == 400 and response.get_json()["code"] == 400
    assert row_counts(app) == (0, 0, 0)


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_forms_as_long_as_the_lists_may_be(app, client, acme, encoding):
    """Every list at its longest (a form part each attachment id, three each read-map
    entry) is taken; werkzeug's own limits on form parts would refuse it (413)."""
    limit = app.config["MAX_LIST_LENGTH"]
    body = {"attachment_ids": [str(n) for n in range(limit)],
            "message_read_map": [{"keys": str(n), "values": "v", "queryparam": True}
                                 for n in range(limit)]}

    written = write(client, acme, "post", body, encoding)

    assert written["attachment_ids"] == body["attachment_ids"]
    assert written["message_read_map"] == body["message_read_map"]


def test_a_file_is_not_a_value(app, client, acme):
    response = client.post(SMS, data={"ref_id": (BytesIO(b"x"), "ref.txt")}, headers=acme,
                           content_type=MULTIPART)

    assert response.status_code == 422
    assert response.get_json()["errors"]["json"] == {"ref_id": ["Not a valid string."]}
    assert row_counts(app) == (0, 0, 0)


def test_a_multipart_retry_with_another_boundary_is_replayed(client, acme):
    """Idempotency-Key compares the fields sent, not the bytes: a retry's multipart body
    has a boundary of its own."""
    keyed = {**acme, "Idempotency-Key": "form-1"}
    fields = MultiDict([("ref_id", "r"), ("attachment_ids", "a")])
    first, retry = (
        client.post(SMS, data=encode_multipart(fields, boundary)[1], headers=keyed,
                    content_type=f"{MULTIPART}; boundary={boundary}")
        for boundary in ("one-boundary", "another-boundary"))
    other = send(client, "post", SMS, keyed, [("ref_id", "other")], "form")

    assert first.status_code == 201 and retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true" and retry.data == first.data
    assert other.status_code == 422
    assert len(client.get(SMS, headers=acme).get_json()) == 1


@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_if_match_guards_a_form_update(client, acme, encoding):
    created = client.post(SMS, json={}, headers=acme)
    target = url(created.get_json()["id"])
    stale = created.headers["ETag"]
    assert send(client, "patch", target, {**acme, "If-Match": stale}, [("ref_id", "a")],
                encoding).status_code == 200

    response = send(client, "patch", target, {**acme, "If-Match": stale}, [("ref_id", "b")],
                    encoding)

    assert response.status_code == 412
    assert client.get(target, headers=acme).get_json()["ref_id"] == "a"


def test_another_organization_in_a_form_is_403(app, client, acme):
    response = send(client, "post", SMS, acme, [("organization", "globex")], "form")

    assert response.status_code == 403 and row_counts(app) == (0, 0, 0)


def test_the_openapi_document_shows_the_form_bodies(client):
    spec = client.get("/openapi.json").get_json()
    form = spec["components"]["schemas"]["MessageForm"]["properties"]

    for path, method in ((SMS, "post"), (f"{SMS}{{message_id}}/", "put"),
                         (f"{SMS}{{message_id}}/", "patch")):
        content = spec["paths"][path][method]["requestBody"]["content"]
        assert set(content) == {"application/json", FORM, MULTIPART}
        assert content[FORM]["schema"] == {"$ref": "#/components/schemas/MessageForm"}
    assert form["attachment_ids"]["type"] == "array"
    assert form["email_data.keys"]["type"] == "string"
    assert form["message_read_map[0]queryparam"]["type"] == "boolean"
    assert form["msg_type"]["maximum"] == 2**63 - 1 and "id" not in form


# --- Ids in URLs, in either case --------------------------------------------------------

@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_an_upper_case_id_names_the_same_message(client, acme, method):
    created = create(client, acme, {"ref_id": "r"})

    response = getattr(client, method)(url(created["id"].upper()), json={"type": "t"},
                                       headers=acme)

    assert response.status_code == (204 if method == "delete" else 200)
    if method != "delete":
        assert response.get_json()["id"] == created["id"]  # lower case, as stored
    after = client.get(url(created["id"]), headers=acme)
    assert after.status_code == (404 if method == "delete" else 200)


def test_an_id_filter_in_upper_case(client, acme):
    created = create(client, acme)
    create(client, acme)

    listed = client.get(f"{SMS}?id={created['id'].upper()}", headers=acme).get_json()

    assert [message["id"] for message in listed] == [created["id"]]


# --- Key/value objects ------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    {"keys": "k", "values": "v", "queryparam": True},
    {"keys": 5, "values": 5.5, "queryparam": "yes"},
    {"keys": f"{PADDED}k"}, {}, {"values": None, "queryparam": "0"}, {"queryparam": None},
    {"keys": True}, {"keys": ["k"]}, {"values": {"k": "v"}}, {"queryparam": "maybe"},
    {"keys": "a\x00b"}, {"keys": "k", "other": 1}, {"keys": 1, "queryparam": "maybe"},
    [], [{"keys": "k"}], "k", 5, None,
])
def test_a_key_value_object_loads_as_its_nested_schema_loads_it(app, value):
    """KeyValue loads a plain object field by field, not through a nested load: the same
    values, and the same errors (which it leaves to the nested load)."""
    with app.app_context():
        assert load(KeyValue(allow_none=True), value) == \
            load(fields.Nested(KeyValueInputSchema, allow_none=True), value)


def test_a_key_value_object_past_the_length_limit_is_refused_as_its_nested_schema_does(app):
    too_long = {"values": "x" * (app.config["MAX_TEXT_LENGTH"] + 1)}
    with app.app_context():
        refused = load(KeyValue(), too_long)
        assert refused == load(fields.Nested(KeyValueInputSchema), too_long)
    assert refused[0] == "refused"


def load(field: fields.Field, value) -> tuple[str, object]:
    try:
        return "loaded", field.deserialize(value)
    except ValidationError as error:
        return "refused", error.messages
