"""Every setting is read per app (create_app's config), never from Config at import time:
apps with other limits in one process each enforce, and document, their own."""
import pytest
from werkzeug.datastructures import MultiDict

from helpers import SMS

SMALL = {"MAX_TEXT_LENGTH": 5, "MAX_INDEXED_TEXT_LENGTH": 3, "MAX_LIST_LENGTH": 2}
FORM_TYPES = ["application/x-www-form-urlencoded", "multipart/form-data"]


@pytest.fixture
def small(database_url, make_app):
    """A client of an app with small limits, on the same database as `client`'s."""
    return make_app({"DATABASE_URL": database_url, **SMALL}).test_client()


def status(client, headers, body) -> int:
    return client.post(SMS, json=body, headers=headers).status_code


@pytest.mark.parametrize("body", [
    {"type": "x" * 6},
    {"ref_id": "x" * 4},
    {"attachment_ids": ["a", "b", "c"]},
    {"attachment_ids": ["x" * 6]},
    {"message_read_map": [{}, {}, {}]},
    {"sms_data": {"keys": "x" * 6}},
])
def test_each_app_enforces_its_own_limits(client, small, acme, body):
    within = {"type": "x" * 5, "ref_id": "x" * 3, "attachment_ids": ["a", "x" * 5],
              "message_read_map": [{}, {}], "sms_data": {"keys": "x" * 5}}

    assert status(small, acme, body) == 422
    assert status(small, acme, within) == 201
    assert status(client, acme, body) == 201  # the default limits, in the same process


def documented_limits(client) -> dict:
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    body, form = schemas["MessageInput"]["properties"], schemas["MessageForm"]["properties"]
    return {
        "text": body["type"]["maxLength"], "indexed": body["ref_id"]["maxLength"],
        "list": body["attachment_ids"]["maxItems"],
        "item": body["attachment_ids"]["items"]["maxLength"],
        "read map": body["message_read_map"]["maxItems"],
        "key": schemas["KeyValueInput"]["properties"]["keys"]["maxLength"],
        "form": form["sms_data.keys"]["maxLength"],
    }


def test_each_app_documents_its_own_limits(app, small):
    limits = documented_limits(small)
    default = documented_limits(app.test_client())  # asked after the small app was made

    assert limits == {"text": 5, "indexed": 3, "list": 2, "item": 5, "read map": 2, "key": 5,
                      "form": 5}
    assert default == {"text": 100_000, "indexed": 300, "list": 1000, "item": 100_000,
                       "read map": 1000, "key": 100_000, "form": 100_000}


@pytest.mark.parametrize("content_type", FORM_TYPES)
def test_form_limits_follow_the_apps_body_and_list_limits(database_url, acme, content_type,
                                                          make_app):
    """werkzeug's limits on forms are derived from the app's own MAX_CONTENT_LENGTH and
    MAX_LIST_LENGTH: a form within those is taken, however far past the defaults."""
    larger = make_app({"DATABASE_URL": database_url, "MAX_LIST_LENGTH": 1500,
                       "MAX_CONTENT_LENGTH": 3 * 1024 * 1024, "MAX_TEXT_LENGTH": 2_000_000})
    text = "x" * 1_500_000  # more than the default 1 MiB
    pairs = [("ref_display_id", text)] + [
        (f"message_read_map[{n}]{key}", value) for n in range(1500)
        for key, value in (("keys", str(n)), ("values", "v"), ("queryparam", "on"))
    ]  # 4,501 parts: past the default 4,100

    response = larger.test_client().post(SMS, data=MultiDict(pairs), headers=acme,
                                         content_type=content_type)

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["ref_display_id"] == text
    assert len(response.get_json()["message_read_map"]) == 1500


def test_given_form_limits_are_kept(database_url, make_app):
    app = make_app({"DATABASE_URL": database_url, "MAX_FORM_PARTS": 10})

    assert app.config["MAX_FORM_PARTS"] == 10
    assert app.config["MAX_FORM_MEMORY_SIZE"] == app.config["MAX_CONTENT_LENGTH"]
