"""CORS for browser clients: real preflights, and the headers scripts may read."""
import pytest

from helpers import SMS, url

ORIGIN = "https://app.example.com"


@pytest.fixture
def browser_app(database_url, make_app):
    return make_app({"DATABASE_URL": database_url, "CORS_ORIGINS": [ORIGIN]})


@pytest.mark.parametrize("path", [SMS, url("0123456789abcdef01234567")])
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_preflights_allow_every_verb_and_the_headers_clients_send(browser_app, path, method):
    response = browser_app.test_client().options(path, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, if-match, content-type, "
                                          "idempotency-key"})

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert method in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "if-match", "content-type", "idempotency-key"} <= set(
        allowed.replace(" ", "").split(","))


def test_scripts_may_read_the_api_headers(browser_app, acme):
    client = browser_app.test_client()
    created = client.post(SMS, json={}, headers={**acme, "Origin": ORIGIN})
    listed = client.get(SMS, headers={**acme, "Origin": ORIGIN})

    for response in (created, listed):
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        exposed = set(response.headers["Access-Control-Expose-Headers"].split(", "))
        assert {"ETag", "Link", "X-Pagination", "Location", "Idempotent-Replayed"} <= exposed


def test_other_origins_get_no_cors_headers(browser_app, acme):
    response = browser_app.test_client().get(SMS, headers={**acme,
                                                           "Origin": "https://evil.example"})

    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_preflight_is_not_a_way_around_the_key(browser_app):
    response = browser_app.test_client().options(SMS, headers={"Origin": ORIGIN})
    assert response.get_data() == b""  # an OPTIONS answer has no messages in it
    assert browser_app.test_client().get(SMS, headers={"Origin": ORIGIN}).status_code == 401


def test_cors_is_off_until_origins_are_configured(client, acme):
    response = client.get(SMS, headers={**acme, "Origin": ORIGIN})

    assert response.status_code == 200 and "Access-Control-Allow-Origin" not in response.headers
