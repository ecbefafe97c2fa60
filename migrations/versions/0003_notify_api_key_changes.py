"""notify listeners of every change to api_keys (PostgreSQL)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Each service process caches key lookups and LISTENs on `api_keys_changed`; this trigger
tells it to drop its cache on any change, made by the service's commands or by hand in SQL,
so that a revoked key is refused at once. SQLite has no NOTIFY; there nothing is cached.
"""
from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION notify_api_keys_changed() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_notify('api_keys_changed', ''); RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        "ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION notify_api_keys_changed()"
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER api_keys_changed ON api_keys")
    op.execute("DROP FUNCTION notify_api_keys_changed()")
