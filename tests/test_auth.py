"""API keys and organizations (contract: "Authentication and organizations")."""
import hashlib
import time

import pytest
from sqlalchemy import create_engine, make_url, select, text

from helpers import (SMS, TcpProxy, assert_refused_from_now_on, create, dispose_app, full_message,
                     make_key, migrated_database, url)
from messenger_app.db import db
from messenger_app.key_cache import KeyCache
from messenger_app.models import ApiKey

VERBS = ["get_list", "post", "get", "put", "patch", "delete"]


def call(client, verb: str, headers: dict, message_id: str = "0" * 24, body=None):
    """One request of each kind the API has."""
    if verb == "get_list":
        return client.get(SMS, headers=headers)
    if verb == "post":
        return client.post(SMS, json=body or {}, headers=headers)
    return getattr(client, verb)(url(message_id), json=body or {}, headers=headers)


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("authorization", [
    None, "", "Token", "Token not-a-key", "not-a-key", "Basic dXNlcjpwYXNz", "Token a b",
])
def test_requests_without_a_valid_key_are_401(app, client, acme, verb, authorization):
    message_id = create(client, acme)["id"]
    headers = {} if authorization is None else {"Authorization": authorization}

    response = call(client, verb, headers, message_id)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Token")
    assert response.get_json()["code"] == 401
    assert client.get(url(message_id), headers=acme).status_code == 200  # DELETE did nothing
    assert len(client.get(SMS, headers=acme).get_json()) == 1  # POST did nothing


@pytest.mark.parametrize("scheme", ["", "Token ", "token ", "Bearer ", "BEARER ", "Api-Key ",
                                    "api-key "])
def test_every_header_form_is_accepted(client, acme, scheme):
    secret = acme["Authorization"].split()[1]

    response = client.get(SMS, headers={"Authorization": f"{scheme}{secret}"})

    assert response.status_code == 200


def test_a_revoked_key_is_refused_at_once(client, runner, acme):
    secret = acme["Authorization"].split()[1]
    assert client.get(SMS, headers=acme).status_code == 200

    assert runner.invoke(args=["api-key", "revoke", secret]).exit_code == 0

    assert_refused_from_now_on(client, acme)


def test_a_key_of_another_organization_sees_nothing(client, acme, globex):
    mine = create(client, acme, full_message("acme"))

    assert client.get(SMS, headers=globex).get_json() == []
    assert client.get(f"{SMS}?organization=acme", headers=globex).get_json() == []
    for verb in ("get", "put", "patch", "delete"):
        response = call(client, verb, globex, mine["id"], {"ref_id": "stolen"})
        assert response.status_code == 404, verb
    assert client.get(url(mine["id"]), headers=acme).get_json() == mine


def test_new_messages_get_the_keys_organization(client, acme):
    assert create(client, acme)["organization"] == "acme"
    assert create(client, acme, {"organization": "acme"})["organization"] == "acme"


@pytest.mark.parametrize("organization", ["globex", None, ""])
def test_a_body_naming_another_organization_is_403(client, acme, organization):
    mine = create(client, acme)
    body = {"organization": organization, "ref_id": "moved"}

    for verb in ("post", "put", "patch"):
        response = call(client, verb, acme, mine["id"], body)
        assert response.status_code == 403, verb
        assert response.get_json()["code"] == 403
    assert client.get(url(mine["id"]), headers=acme).get_json() == mine
    assert len(client.get(SMS, headers=acme).get_json()) == 1


def test_an_all_organizations_key_reaches_every_message(client, acme, globex, admin):
    a = create(client, acme)
    g = create(client, globex)

    assert {m["id"] for m in client.get(SMS, headers=admin).get_json()} == {a["id"], g["id"]}
    assert [m["id"] for m in client.get(f"{SMS}?organization=globex", headers=admin).get_json()] \
        == [g["id"]]
    assert client.get(url(a["id"]), headers=admin).status_code == 200
    moved = client.patch(url(a["id"]), json={"organization": "globex"}, headers=admin)
    assert moved.status_code == 200 and moved.get_json()["organization"] == "globex"
    assert client.get(url(a["id"]), headers=acme).status_code == 404
    assert client.delete(url(g["id"]), headers=admin).status_code == 204


def test_an_all_organizations_key_creates_where_the_body_says(client, admin):
    assert create(client, admin, {"organization": "initech"})["organization"] == "initech"
    assert create(client, admin)["organization"] is None


def test_an_organization_key_lists_only_its_organization(app, client, acme, globex):
    mine = {create(client, acme)["id"] for _ in range(3)}
    create(client, globex)
    other_acme_key = make_key(app, "acme")

    listed = {m["id"] for m in client.get(SMS, headers=other_acme_key).get_json()}

    assert listed == mine


def stored_key(app, organization, secret, salt) -> dict:
    with app.app_context():
        db.session.add(ApiKey(organization=organization, all_organizations=False, name="t",
                              key_prefix=ApiKey.prefix(secret), key_salt=salt,
                              key_digest=ApiKey.digest(salt, secret)))
        db.session.commit()
    return {"Authorization": secret}


def test_keys_are_stored_salted(app, acme):
    secret = acme["Authorization"].split()[1]
    with app.app_context():
        key = db.session.scalars(select(ApiKey)).one()

    assert len(key.key_salt) == 32 and key.key_prefix == secret[:12]
    assert key.key_digest != hashlib.sha256(secret.encode()).hexdigest()
    assert ApiKey.matches(key.key_salt, key.key_digest, secret)
    assert not ApiKey.matches(key.key_salt, key.key_digest, secret + "x")


def test_a_key_from_before_the_salt_still_works(app, client):
    legacy = stored_key(app, "acme", "msk_" + "L" * 43, salt="")

    assert client.get(SMS, headers=legacy).status_code == 200


def test_keys_sharing_a_prefix_are_told_apart_by_their_digest(app, client):
    first = stored_key(app, "acme", "msk_samepref" + "1" * 35, salt="a" * 32)
    second = stored_key(app, "globex", "msk_samepref" + "2" * 35, salt="b" * 32)
    wrong = {"Authorization": "msk_samepref" + "3" * 35}

    assert create(client, first)["organization"] == "acme"
    assert create(client, second)["organization"] == "globex"
    assert client.get(SMS, headers=wrong).status_code == 401


# --- Revocation whatever happens to the listening connection (PostgreSQL) ---------------

LISTENER = ("SELECT {what} FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = 'LISTEN api_keys_changed'")


def revoke_every_key_in_sql(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP"))
    engine.dispose()


def on_the_server(url: str, sql: str):
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        result = connection.scalar(text(sql))
    engine.dispose()
    return result


@pytest.fixture
def keys_database(tmp_path_factory) -> str:
    return migrated_database("postgresql", tmp_path_factory, "keys")


def test_a_revoked_key_is_refused_when_the_listener_was_killed(keys_database, make_app):
    """A killed backend sends its goodbye before it closes: the cache must not serve a key
    from the read that only brings in the goodbye."""
    app = make_app({"DATABASE_URL": keys_database})
    client, headers = app.test_client(), make_key(app, "acme")
    assert client.get(SMS, headers=headers).status_code == 200  # looked up, cached

    assert on_the_server(keys_database, LISTENER.format(
        what="count(pg_terminate_backend(pid))")) == 1
    time.sleep(0.2)  # the goodbye has arrived
    revoke_every_key_in_sql(keys_database)

    assert [client.get(SMS, headers=headers).status_code for _ in range(3)] == [401] * 3


def test_a_revoked_key_is_refused_within_the_cache_age_when_the_listener_is_cut_off(
        keys_database, make_app):
    """A firewall silently drops the idle listening connection: the notification of the
    revocation never arrives, yet the key is refused within API_KEY_CACHE_SECONDS."""
    proxy = TcpProxy(5432)
    proxied = make_url(keys_database).set(port=proxy.port).render_as_string(hide_password=False)
    app = make_app({"DATABASE_URL": proxied, "API_KEY_CACHE_SECONDS": 1})
    client, headers = app.test_client(), make_key(app, "acme")
    try:
        assert client.get(SMS, headers=headers).status_code == 200  # looked up, cached
        proxy.black_hole(on_the_server(keys_database, LISTENER.format(what="client_port")))
        revoke_every_key_in_sql(keys_database)

        assert_refused_from_now_on(client, headers, within=3)
    finally:
        dispose_app(app)  # its connections through the proxy, before the proxy goes
        proxy.close()


def test_a_lookup_overtaken_by_a_revocation_is_not_cached(keys_database, make_app,
                                                          monkeypatch):
    """A key read just before its revocation commits is used for that request, but the
    notification that arrives meanwhile keeps it out of the cache."""
    app = make_app({"DATABASE_URL": keys_database})
    client, first, second = app.test_client(), make_key(app, "acme"), make_key(app, "acme")
    cache = app.extensions["api_key_cache"]
    query = KeyCache._query

    def query_then_revoke(secret: str):
        key, emptied = query(secret), cache.generation
        revoke_every_key_in_sql(keys_database)
        deadline = time.monotonic() + 5
        while cache.generation == emptied:  # until the notification has arrived
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return key

    assert client.get(SMS, headers=first).status_code == 200  # listening from now on
    monkeypatch.setattr(KeyCache, "_query", staticmethod(query_then_revoke))
    assert client.get(SMS, headers=second).status_code == 200  # read before the revocation
    monkeypatch.setattr(KeyCache, "_query", staticmethod(query))

    assert client.get(SMS, headers=second).status_code == 401
