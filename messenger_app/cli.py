"""The `flask --app wsgi` commands: `api-key create|list|revoke`, `idempotency purge`,
`events purge`, `import-mongo FILE`, `export FILE`, `partitions` and `retention --before
DATE`. Registered on the app as blueprints (`commands`)."""
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import click
from flask import Blueprint, current_app
from sqlalchemy import Engine, select

from . import idempotency, outbox, partitions, transfer
from .config import session_url
from .db import db, make_engine
from .models import ApiKey, utcnow

api_keys = Blueprint("api_keys", __name__, cli_group="api-key")
idempotency_keys = Blueprint("idempotency", __name__, cli_group="idempotency")
transfers = Blueprint("transfer", __name__, cli_group=None)
message_events = Blueprint("event_commands", __name__, cli_group="events")
maintenance = Blueprint("maintenance", __name__, cli_group=None)
commands = (api_keys, idempotency_keys, transfers, message_events, maintenance)


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


@contextmanager
def maintenance_engine() -> Iterator[Engine]:
    """An engine of the command's own, without the requests' timeouts (DDL and batches of
    deletes are no request): to PostgreSQL itself where DATABASE_SESSION_URL says. Tables
    that stay locked by others make the command fail, changing nothing more."""
    config = current_app.config
    direct = session_url(config)
    engine = make_engine(direct or config["DATABASE_URL"],
                         pooled=direct is None and config["DATABASE_TRANSACTION_POOLING"])
    try:
        yield engine
    except partitions.Busy as error:
        raise click.ClickException(f"{error} Run the command again.") from error
    finally:
        engine.dispose()


@maintenance.cli.command("partitions")
@click.option("--ahead", default=partitions.MONTHS_AHEAD, show_default=True,
              type=click.IntRange(min=0, max=120), help="Months to partition past this one.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m"]),
              help="Partition every month from this one (YYYY-MM) too, before an import of "
                   "older messages.")
def partitions_command(ahead, since):
    """Make the monthly partitions of messages (and its child tables) from this month to
    --ahead months on, and for every month whose messages landed in the default partition
    (moving them in). Safe to run at any time, and again; run it daily (PostgreSQL; on
    SQLite it does nothing)."""
    with maintenance_engine() as engine:
        if engine.dialect.name != "postgresql":
            click.echo("Nothing to do: only PostgreSQL partitions messages.")
            return
        made = partitions.ensure_partitions(engine, datetime.now(UTC).date(), ahead,
                                            since and since.date())
    click.echo(f"Made the partitions of {', '.join(made)}." if made
               else "Every month needed has its partitions already.")


@maintenance.cli.command("retention")
@click.option("--before", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Remove the messages made before this day (YYYY-MM-DD, 00:00 UTC).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def retention_command(before, dry_run):
    """Remove every message made before a day (by the creation time in its id), with its
    attachment ids and key/value objects: whole monthly partitions are dropped (no bloat,
    no long DELETE), and only the month that straddles the day is deleted from, in
    batches. Prints what it removed; run again, it removes nothing more."""
    if before.date() > datetime.now(UTC).date():
        raise click.BadParameter("is in the future; no message is made before it yet.",
                                 param_hint="'--before'")
    verb = ("would drop", "would delete from") if dry_run else ("dropped", "deleted from")
    total = 0
    with maintenance_engine() as engine:
        for removal in partitions.remove_before(engine, before.date(), dry_run):
            total += removal.messages
            click.echo(f"{verb[0] if removal.dropped else verb[1]} {removal.partition}:"
                       f" {removal.messages} messages")
        with engine.begin() as connection:  # the live-updates feed's, by the same rule
            made_before = before.replace(tzinfo=UTC)
            events = (outbox.count_before(connection, made_before) if dry_run
                      else outbox.purge(connection, made_before))
        if events:
            click.echo(f"{verb[1]} message_events: {events} events")
    click.echo(f"{'Would remove' if dry_run else 'Removed'} {total} messages made before"
               f" {before:%Y-%m-%d}.")
