"""How a request becomes an API key, and the `flask api-key` commands that manage keys."""
import click
from flask import Blueprint, g
from flask import request
from flask_smorest import abort
from sqlalchemy import bindparam, select

from .extensions import db
from .models import ApiKey, utcnow

# Besides the bare key (as the original service took it), these scheme words, in any case.
SCHEMES = {"token", "bearer", "api-key"}


def secret_from_header(header: str) -> str | None:
    parts = header.split()
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and parts[0].lower() in SCHEMES:
        return parts[1]
    return None


KEY_BY_DIGEST = (
    select(ApiKey.organization, ApiKey.all_organizations)
    .where(ApiKey.key_digest == bindparam("digest"), ApiKey.revoked_at.is_(None))
)


def authenticate() -> None:
    """Before every request under /ux/: a valid, unrevoked key, or 401."""
    secret = secret_from_header(request.headers.get("Authorization", ""))
    key = secret and db.connection().execute(KEY_BY_DIGEST, {"digest": ApiKey.digest(secret)}).first()
    if not key:
        abort(
            401,
            message="A valid API key is required in the Authorization header.",
            headers={"WWW-Authenticate": 'Token realm="messenger"'},
        )
    g.api_key = key


def current_key():
    """The current request's key: its `organization` and `all_organizations`."""
    return g.api_key


def require_organization_access(organization: str | None) -> None:
    """403 unless the current key may put a message in `organization`."""
    key = current_key()
    if not (key.all_organizations or organization == key.organization):
        abort(403, message="This API key can't write messages of another organization.")


cli = Blueprint("api_keys", __name__, cli_group="api-key")


@cli.cli.command("create")
@click.option("--organization", help="The organization whose messages the key reaches.")
@click.option("--all-organizations", is_flag=True, help="Reach every organization's messages.")
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--if-none", is_flag=True, help="Do nothing when an unrevoked key exists.")
def create_key(organization, all_organizations, name, if_none):
    """Create an API key and print it, once, on the last line."""
    if bool(organization) == all_organizations:
        raise click.UsageError("Give exactly one of --organization ORG and --all-organizations.")
    session = db.session
    if if_none and session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)):
        return
    key, secret = ApiKey.generate(organization, name)
    session.add(key)
    session.commit()
    scope = f"organization {organization}" if organization else "all organizations"
    click.echo(f"Created API key {key.id} ({scope}). Keep it now; it is not shown again:")
    click.echo(secret)


@cli.cli.command("list")
def list_keys():
    """List API keys (never the keys themselves, only their first characters)."""
    keys = db.session.scalars(select(ApiKey).order_by(ApiKey.id))
    click.echo("id\tprefix\torganization\tname\tcreated\trevoked")
    for key in keys:
        organization = "*" if key.all_organizations else key.organization
        click.echo(
            f"{key.id}\t{key.key_prefix}…\t{organization}\t{key.name}\t"
            f"{key.created_at:%Y-%m-%d %H:%M:%S}\t{key.revoked_at or ''}"
        )


@cli.cli.command("revoke")
@click.argument("key_or_id")
def revoke_key(key_or_id):
    """Revoke an API key, given the key itself or its id from `list`."""
    session = db.session
    if key_or_id.isdigit():
        key = session.get(ApiKey, int(key_or_id))
    else:
        key = session.scalar(select(ApiKey).where(ApiKey.key_digest == ApiKey.digest(key_or_id)))
    if key is None:
        raise click.ClickException("No such API key.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.commit()
    click.echo(f"Revoked API key {key.id}.")
