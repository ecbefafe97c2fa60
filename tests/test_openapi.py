"""/openapi.json: a valid OpenAPI document (openapi-spec-validator) that documents every
operation, parameter and header, every error each operation gives (each one provoked here
and compared with its documentation), and the original API doc's examples."""
import json
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
from openapi_spec_validator import validate

from helpers import CLOSED_PORT_URL, EVENTS, SMS, create
from messenger_app import outbox, queries
from messenger_app.db import db
from messenger_app.config import PROJECT_ROOT

# The original service's API doc: a verbatim copy of ../shared/seed/000_199ded8510212ab4.txt,
# kept in the repository so that a clone alone can run this test.
ORIGINAL_API_DOC = PROJECT_ROOT / "docs" / "original-api.txt"
ITEM = f"{SMS}{{message_id}}/"
# Every error each operation can give; each is provoked below.
ERRORS = {
    "list_messages": {401, 422, 503},
    "create_message": {400, 401, 403, 409, 413, 415, 422, 503},
    "read_message": {401, 404, 503},
    "update_message": {400, 401, 403, 404, 409, 412, 413, 415, 422, 503},
    "partial_update_message": {400, 401, 403, 404, 409, 412, 413, 415, 422, 503},
    "delete_message": {401, 404, 409, 412, 422, 503},
    "list_events": {401, 410, 422, 503},
}
WRITES = {"POST": "insert_message", "PUT": "update_message", "PATCH": "update_message",
          "DELETE": "delete_message"}


@pytest.fixture
def spec(client) -> dict:
    return client.get("/openapi.json").get_json()


def operations(spec: dict) -> dict[str, tuple[str, str, dict]]:
    """operationId: (method, path, operation)."""
    return {operation["operationId"]: (method, path, operation)
            for path, item in spec["paths"].items() for method, operation in item.items()
            if method != "parameters"}


def validator(spec: dict, name: str) -> OAS30ReadValidator:
    """A strict validator of the document's schema `name` in a response (references
    resolved)."""
    return OAS30ReadValidator({"$ref": f"#/components/schemas/{name}",
                               "components": spec["components"]},
                              format_checker=oas30_format_checker)


def resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = spec["components"][section][name]
    return node


def test_the_document_is_valid_openapi(spec):
    validate(spec)  # raises on any error

    assert spec["openapi"] == "3.0.3"
    assert {operation_id for operation_id, (_, path, _) in operations(spec).items()
            if path.startswith(SMS)} == set(ERRORS)


def test_the_key_headers_and_list_parameters_are_documented(spec):
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    found = operations(spec)
    parameters = {p["name"]: p for p in found["list_messages"][2]["parameters"]}

    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert spec["security"] == [{"ApiKey": []}]
    assert all(p.get("description") for p in parameters.values())
    assert {"ref_id", "organization", "is_deleted", "creation_time__gte", "module_id__lt",
            "ordering", "page", "page_size", "cursor"} <= set(parameters)
    assert set(found["list_messages"][2]["responses"]["200"]["headers"]) == {"X-Pagination",
                                                                             "Link"}
    assert {"ETag", "Location"} <= set(found["create_message"][2]["responses"]["201"]["headers"])
    for operation_id in ("read_message", "update_message", "partial_update_message"):
        assert "ETag" in found[operation_id][2]["responses"]["200"]["headers"]
    for operation_id in ("update_message", "partial_update_message", "delete_message"):
        assert "If-Match" in {p["name"] for p in found[operation_id][2]["parameters"]}
    assert "If-None-Match" in {p["name"] for p in found["read_message"][2]["parameters"]}


def test_every_error_response_is_the_error_schema(spec):
    for operation_id, (_, _, operation) in operations(spec).items():
        for code, response in operation["responses"].items():
            if code == "default" or int(code) >= 400:
                content = resolve(spec, response)["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, operation_id
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "status", "message"}


def test_each_operation_documents_exactly_the_errors_it_gives(spec):
    for operation_id, codes in ERRORS.items():
        documented = {int(code) for code in operations(spec)[operation_id][2]["responses"]
                      if code != "default" and int(code) >= 400}
        assert documented == codes, operation_id


def provoke(app, client, headers, method: str, path: str, code: int, monkeypatch, make_app):
    """Send the request that `method` on `path` answers with `code`."""
    message_id = create(client, headers)["id"] if "{message_id}" in path else None
    target = path.replace("{message_id}", "0" * 24 if code == 404 else str(message_id))
    if code == 409:
        return repeat_while_running(app, method.upper(), target, headers, monkeypatch)
    if code == 410:
        return after_an_expired_cursor(app, client, headers, target)
    json_type = "application/json"
    request = {
        400: {"data": "{not json", "content_type": json_type},
        401: {"headers": {}},
        403: {"json": {"organization": "globex"}},
        404: {},
        412: {"headers": {**headers, "If-Match": '"999"'}},
        413: {"data": json.dumps({"ref_id": "x" * app.config["MAX_CONTENT_LENGTH"]}),
              "content_type": json_type},
        415: {"data": "{}", "content_type": "text/plain"},
        422: ({"query_string": {"page_size": 0}} if method == "get" else
              {"headers": {**headers, "Idempotency-Key": "not valid"}} if method == "delete"
              else {"json": {"msg_type": "one"}}),
        503: {},
    }[code]
    if code == 503:
        client = make_app({"DATABASE_URL": CLOSED_PORT_URL}).test_client()
    return client.open(target, method=method.upper(), **{"headers": headers, **request})


def after_an_expired_cursor(app, client, headers, target: str):
    """The feed after an event that was purged (and a later one, kept)."""
    create(client, headers)
    create(client, headers)
    expired = client.get(target, headers=headers).get_json()[0]["event_id"]
    with app.app_context(), db.engine.begin() as connection:
        outbox.purge(connection, datetime.now(UTC) + timedelta(days=1))
    return client.get(target, query_string={"after": expired}, headers=headers)


def repeat_while_running(app, method: str, target: str, headers: dict, monkeypatch):
    """The same write with the same Idempotency-Key, sent while the first one runs."""
    keyed = {**headers, "Idempotency-Key": "provoke-409"}
    real_write = getattr(queries, WRITES[method])
    repeats = []

    def write(*args):
        if not repeats:  # from another thread: a request has its thread's connection
            repeat = threading.Thread(target=lambda: repeats.append(
                app.test_client().open(target, method=method, headers=keyed, json={})))
            repeat.start()
            repeat.join()
        return real_write(*args)

    monkeypatch.setattr(queries, WRITES[method], write)
    assert app.test_client().open(target, method=method, headers=keyed, json={}).status_code < 300
    return repeats[0]


@pytest.mark.parametrize("operation_id, code", [
    (operation_id, code) for operation_id, codes in ERRORS.items() for code in sorted(codes)])
def test_each_documented_error_is_what_the_operation_answers(app, client, acme, spec,
                                                             monkeypatch, make_app,
                                                             operation_id, code):
    method, path, operation = operations(spec)[operation_id]
    documented = resolve(spec, operation["responses"][str(code)])

    response = provoke(app, client, acme, method, path, code, monkeypatch, make_app)

    assert response.status_code == code
    body = response.get_json()
    validator(spec, "Error").validate(body)
    example = documented["content"]["application/json"]["example"]
    assert (body["code"], body["status"]) == (example["code"], example["status"])
    assert set(documented.get("headers", {})) <= set(response.headers.keys())


def example_of(spec: dict, schema: dict, writing: bool):
    """The example a reader of the document sees (as Swagger UI builds it): the schema's
    own example, or one built from its items' or properties' examples."""
    schema = resolve(spec, schema)
    if "allOf" in schema or "anyOf" in schema:  # a nullable object: the object
        return example_of(spec, (schema.get("allOf") or schema["anyOf"])[0], writing)
    if "example" in schema:
        return schema["example"]
    if schema.get("type") == "array":
        return [example_of(spec, schema["items"], writing)]
    return {name: example_of(spec, field, writing) for name, field in schema["properties"].items()
            if not (writing and field.get("readOnly"))}


def seed_examples() -> list:
    """The JSON examples of the original API doc (request and response bodies)."""
    text = ORIGINAL_API_DOC.read_text()
    return [json.loads(block) for block in re.findall(r"^[\[{]$.*?^[\]}]$", text, re.M | re.S)]


def test_the_examples_are_the_original_api_docs(spec):
    found = operations(spec)
    request = example_of(spec, {"$ref": "#/components/schemas/Message"}, writing=True)
    response = example_of(spec, {"$ref": "#/components/schemas/Message"}, writing=False)
    listed = example_of(spec, found["list_messages"][2]["responses"]["200"]["content"][
        "application/json"]["schema"], writing=False)
    seed = seed_examples()
    seed_lists = [example for example in seed if isinstance(example, list)]
    seed_objects = [example for example in seed if isinstance(example, dict)]
    seed_requests = [example for example in seed_objects if "id" not in example]
    seed_responses = [example for example in seed_objects if "id" in example]

    assert (len(seed_lists), len(seed_requests), len(seed_responses)) == (1, 3, 4)
    assert all(example == request for example in seed_requests)  # POST, PUT, PATCH
    # The original's "text" is no id nor date-time: the document gives one of each instead.
    assert re.fullmatch("[0-9a-f]{24}", response["id"]) and response["event_time"].endswith("Z")
    readable = {"id": response["id"], "event_time": response["event_time"]}
    assert all({**example, **readable} == response for example in seed_responses)
    assert [{**seed_lists[0][0], **readable}] == listed


# --- What the document promises, as strict tools read it ---------------------------------

def response_validator(spec: dict, operation_id: str, code: str) -> OAS30ReadValidator:
    """A strict validator of the body that `operation_id` documents for `code`."""
    response = resolve(spec, operations(spec)[operation_id][2]["responses"][code])
    schema = response["content"]["application/json"]["schema"]
    return OAS30ReadValidator({**schema, "components": spec["components"]},
                          format_checker=oas30_format_checker)


def test_a_response_always_has_every_key(spec):
    schemas = spec["components"]["schemas"]

    for name in ("Message", "KeyValue"):
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]), name
    assert len(schemas["Message"]["required"]) == 27
    assert schemas["Health"]["required"] == ["status"]  # `schema`: on /readyz only
    for name in ("MessageInput", "KeyValueInput", "MessageForm"):
        assert "required" not in schemas[name], name


def test_every_message_response_is_what_the_document_says(spec, client, acme):
    """With null key/value objects and filled ones alike (nullable as OpenAPI 3.0.3 defines
    it: only beside a `type`)."""
    nulls = client.post(SMS, json={"sms_data": None}, headers=acme)
    filled = create(client, acme, {"message_read_map": [{"keys": "user-7"}],
                                   "email_data": {"keys": "to"}, "sms_data": {"values": "v"}})
    item = f"{SMS}{filled['id']}/"
    answers = {
        ("create_message", "201"): nulls.get_json(),
        ("read_message", "200"): client.get(item, headers=acme).get_json(),
        ("list_messages", "200"): client.get(SMS, headers=acme).get_json(),
        ("partial_update_message", "200"): client.patch(item, json={"api_data": None},
                                                        headers=acme).get_json(),
        ("update_message", "200"): client.put(item, json={"api_data": {}},
                                              headers=acme).get_json(),
    }
    client.delete(f"{SMS}{nulls.get_json()['id']}/", headers=acme)
    answers["list_events", "200"] = client.get(EVENTS, headers=acme).get_json()
    assert [event["event"] for event in answers["list_events", "200"]] == [
        "created", "created", "updated", "updated", "deleted"]
    message = validator(spec, "Message")

    assert nulls.get_json()["sms_data"] is None and filled["sms_data"]["keys"] is None
    for (operation_id, code), body in answers.items():
        response_validator(spec, operation_id, code).validate(body)
    assert not message.is_valid({k: v for k, v in filled.items() if k != "id"})
    assert not message.is_valid({**filled, "sms_data": {"keys": "to"}})  # a key missing


def test_field_errors_are_typed_as_the_service_gives_them(spec, client, acme):
    body = {"attachment_ids": ["a", ["b"]], "message_read_map": [{"keys": []}],
            "sms_data": {"keys": []}, "colour": "red"}
    errors = [
        client.post(SMS, json=body, headers=acme),
        client.get(SMS, query_string={"msg_type": "one"}, headers=acme),
        client.delete(f"{SMS}{'0' * 24}/", headers={**acme, "Idempotency-Key": "not valid"}),
    ]
    error = validator(spec, "Error")
    bodies = [response.get_json() for response in errors]

    assert bodies[0]["errors"]["json"]["message_read_map"] == {
        "0": {"keys": ["Not a valid string."]}}
    assert [set(body["errors"]) for body in bodies] == [{"json"}, {"query"}, {"headers"}]
    for body in bodies:
        error.validate(body)
    assert not error.is_valid({**bodies[1], "errors": {"query": {"msg_type": "one"}}})
    assert not error.is_valid({**bodies[1], "errors": {"cookies": {}}})


def test_bodies_are_optional_as_the_service_takes_none(spec, client, acme):
    created = client.post(SMS, headers=acme)
    patched = client.patch(f"{SMS}{created.get_json()['id']}/", headers=acme)
    found = operations(spec)

    assert (created.status_code, patched.status_code) == (201, 200)
    for operation_id in ("create_message", "update_message", "partial_update_message"):
        assert found[operation_id][2]["requestBody"]["required"] is False, operation_id


def test_list_parameters_may_be_empty_as_the_service_takes_empty_for_absent(spec, client,
                                                                            acme):
    create(client, acme)
    parameters = [p for p in operations(spec)["list_messages"][2]["parameters"]
                  if p["in"] == "query"]
    empty = {p["name"]: "" for p in parameters}

    listed = client.get(SMS, query_string=empty, headers=acme)

    assert listed.status_code == 200 and len(listed.get_json()) == 1
    assert all(p["allowEmptyValue"] is True for p in parameters)
    by_name = {p["name"]: p for p in parameters}
    assert by_name["last_update_time__lte"]["schema"]["format"] == "date-time"
    assert client.get(SMS, query_string={"last_update_time__lte": "x"},
                      headers=acme).status_code == 422
