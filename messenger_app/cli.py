"""The `flask --app wsgi` commands: `api-key create|list|revoke`, `idempotency purge`,
`events purge`, `import-mongo FILE` and `export FILE`. Registered on the app as blueprints
(`commands`)."""
import re
from datetime import timedelta

import click
from flask import Blueprint, current_app
from sqlalchemy import select

from . import idempotency, outbox, transfer
from .db import db
from .models import ApiKey, utcnow

api_keys = Blueprint("api_keys", __name__, cli_group="api-key")
idempotency_keys = Blueprint("idempotency", __name__, cli_group="idempotency")
transfers = Blueprint("transfer", __name__, cli_group=None)
message_events = Blueprint("event_commands", __name__, cli_group="events")
commands = (api_keys, idempotency_keys, transfers, message_events)


@api_keys.cli.command("create")
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


@api_keys.cli.command("list")
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


@api_keys.cli.command("revoke")
@click.argument("key_or_id")
def revoke_key(key_or_id):
    """Revoke an API key, given the key itself or its id from `list`."""
    session = db.session
    if re.fullmatch(r"[0-9]{1,18}", key_or_id):  # an id (ASCII digits: "²" is no id)
        key = session.get(ApiKey, int(key_or_id))
    else:
        candidates = session.scalars(
            select(ApiKey).where(ApiKey.key_prefix == ApiKey.prefix(key_or_id)))
        key = next((candidate for candidate in candidates
                    if ApiKey.matches(candidate.key_salt, candidate.key_digest, key_or_id)), None)
    if key is None:
        raise click.ClickException("No such API key.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.commit()
    click.echo(f"Revoked API key {key.id}.")


@idempotency_keys.cli.command("purge")
def purge_idempotency_keys():
    """Delete the expired Idempotency-Key rows (claims delete some as they go)."""
    with db.engine.begin() as connection:
        deleted = idempotency.purge_expired(connection)
    click.echo(f"Deleted {deleted} expired idempotency keys.")


@message_events.cli.command("purge")
def purge_events():
    """Delete the live-updates events older than EVENTS_RETENTION_DAYS (each process also
    does, hourly)."""
    retention = timedelta(days=current_app.config["EVENTS_RETENTION_DAYS"])
    with db.engine.begin() as connection:
        deleted = outbox.purge(connection, utcnow() - retention)
    click.echo(f"Deleted {deleted} events older than {retention.days} days.")


@transfers.cli.command("import-mongo")
@click.argument("file", type=click.File("rb"))
@click.option("--jsonArray", "json_array_format", is_flag=True,
              help="FILE is one JSON array (mongoexport --jsonArray), not JSON lines.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Documents per transaction.")
def import_mongo_command(file, json_array_format, batch_size):
    """Import messages from a mongoexport of the original collection (Extended JSON,
    canonical or relaxed; JSON lines unless --jsonArray), or from `export`. FILE may be
    `-` for standard input.

    Each document keeps its ObjectId as the message id and its times, and is validated as
    the API validates a POST. A message whose id is stored already is skipped, unchanged.
    Bad documents are reported on stderr with their line number (element index from 0
    with --jsonArray) and reason; the good ones are stored. Exit code 0: every document
    imported or skipped; 1: some were bad."""
    transfer.import_mongo(file, json_array_format, batch_size)


@transfers.cli.command("export")
@click.argument("file", type=click.File("wb"))
@click.option("--organization", help="Only this organization's messages.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Messages read per query.")
def export_command(file, organization, batch_size):
    """Write every message (or one organization's) to FILE (`-`: standard output) as JSON
    lines, each exactly what GET /ux/common/messenger/sms/{id}/ returns, in id order.
    `import-mongo` reads it back."""
    transfer.export(file, organization, batch_size)
