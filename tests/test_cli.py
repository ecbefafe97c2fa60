"""`flask --app wsgi api-key ...`: create, list, revoke."""
import os
import subprocess
import sys

from sqlalchemy import select

from helpers import SMS, assert_refused_from_now_on
from messenger_app.config import PROJECT_ROOT
from messenger_app.db import db
from messenger_app.models import ApiKey


def created_secret(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_create_prints_a_working_organization_key_once(app, runner, client):
    result = runner.invoke(args=["api-key", "create", "--organization", "acme", "--name", "web"])
    secret = created_secret(result)

    assert result.output.count(secret) == 1
    created = client.post(SMS, json={}, headers={"Authorization": secret})
    assert created.status_code == 201 and created.get_json()["organization"] == "acme"
    with app.app_context():
        key = db.session.scalars(select(ApiKey)).one()
        assert (key.organization, key.all_organizations, key.name) == ("acme", False, "web")
        assert secret not in (key.key_digest, key.key_prefix) and len(key.key_digest) == 64


def test_create_an_all_organizations_key(runner, client):
    secret = created_secret(runner.invoke(args=["api-key", "create", "--all-organizations"]))

    created = client.post(SMS, json={"organization": "x"}, headers={"Authorization": secret})

    assert created.status_code == 201 and created.get_json()["organization"] == "x"


def test_create_needs_exactly_one_scope(runner):
    for args in ([], ["--organization", "acme", "--all-organizations"], ["--organization", ""]):
        result = runner.invoke(args=["api-key", "create", *args])
        assert result.exit_code == 2 and "exactly one" in result.output


def test_create_if_none_makes_only_the_first_key(app, runner):
    first = runner.invoke(args=["api-key", "create", "--all-organizations", "--if-none"])
    second = runner.invoke(args=["api-key", "create", "--all-organizations", "--if-none"])

    assert created_secret(first).startswith("msk_")
    assert second.exit_code == 0 and second.output == ""
    with app.app_context():
        assert len(db.session.scalars(select(ApiKey)).all()) == 1


def test_list_shows_keys_without_their_secrets(runner):
    org_secret = created_secret(runner.invoke(args=["api-key", "create", "--organization", "acme",
                                                    "--name", "web client"]))
    all_secret = created_secret(runner.invoke(args=["api-key", "create", "--all-organizations"]))
    runner.invoke(args=["api-key", "revoke", all_secret])

    result = runner.invoke(args=["api-key", "list"])

    assert result.exit_code == 0
    header, first, second = result.output.strip().splitlines()
    assert header.split("\t") == ["id", "prefix", "organization", "name", "created", "revoked"]
    assert first.split("\t")[1:4] == [org_secret[:12] + "…", "acme", "web client"]
    assert first.split("\t")[5] == ""
    assert second.split("\t")[2] == "*" and second.split("\t")[5] != ""
    assert org_secret not in result.output and all_secret not in result.output


def test_revoke_by_id_or_key(runner, client):
    by_id = created_secret(runner.invoke(args=["api-key", "create", "--organization", "a"]))
    by_key = created_secret(runner.invoke(args=["api-key", "create", "--organization", "b"]))
    key_id = runner.invoke(args=["api-key", "list"]).output.splitlines()[1].split("\t")[0]

    assert runner.invoke(args=["api-key", "revoke", key_id]).exit_code == 0
    assert runner.invoke(args=["api-key", "revoke", by_key]).exit_code == 0

    for secret in (by_id, by_key):
        assert_refused_from_now_on(client, {"Authorization": secret})


def test_revoke_an_unknown_key_fails(runner):
    for key_or_id in ("12345", "msk_unknown", "²", "9" * 30):
        result = runner.invoke(args=["api-key", "revoke", key_or_id])
        assert result.exit_code == 1 and "No such API key" in result.output


def test_the_flask_command_finds_the_app_through_wsgi(database_url, client):
    env = {**os.environ, "DATABASE_URL": database_url}
    flask = [sys.executable, "-m", "flask", "--app", "wsgi", "api-key"]

    created = subprocess.run([*flask, "create", "--organization", "acme"], cwd=PROJECT_ROOT,
                             env=env, capture_output=True, text=True, check=True)
    listed = subprocess.run([*flask, "list"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                            text=True, check=True)

    secret = created.stdout.strip().splitlines()[-1]
    assert client.get(SMS, headers={"Authorization": secret}).status_code == 200
    assert secret[:12] in listed.stdout
