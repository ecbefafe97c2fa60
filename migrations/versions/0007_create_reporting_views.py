"""reporting views: message_report, message_daily_counts, unread_per_assignee

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

For analysts who report with plain SQL (docs/reporting.md): one row per message with its
channel data flattened into columns, message counts per organization, type and day, and
unread messages per assignee. Plain views (not materialized): always current, and filters on
organization and creation_time reach the messages indexes. Each database gets its own
dialect of the same views.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MESSAGE_COLUMNS = (
    "id, organization, event_time, creation_time, last_update_time, communication_id, "
    "msg_type, type, user_id, received_config_id, module_id, ref_id, ref_display_id, "
    "is_system_gen, imap_config_id, created_by, is_deleted, is_assignee_read, customer_id, "
    "customer_entity_id, is_description, row_version"
)
DATA_CHANNELS = ("email", "sms", "api", "beep")

# The read map as the API shows it: a JSON array of {"keys", "values", "queryparam"}.
READ_MAP = {
    "postgresql": (
        "coalesce((SELECT jsonb_agg(jsonb_build_object('keys', r.keys_text,"
        " 'values', r.values_text, 'queryparam', r.queryparam) ORDER BY r.ordinal)"
        " FROM message_key_values r WHERE r.message_id = m.id AND r.channel = 'read_map'),"
        " '[]')"
    ),
    "sqlite": (  # SQLite before 3.44 has no ORDER BY inside an aggregate
        "(SELECT json_group_array(json_object('keys', keys_text, 'values', values_text,"
        " 'queryparam', json(CASE WHEN queryparam THEN 'true' ELSE 'false' END)))"
        " FROM (SELECT * FROM message_key_values r WHERE r.message_id = m.id"
        " AND r.channel = 'read_map' ORDER BY r.ordinal))"
    ),
}
DAY = {
    "postgresql": "(creation_time AT TIME ZONE 'UTC')::date",
    "sqlite": "date(creation_time)",
}


def message_report(dialect: str) -> str:
    channel_columns = ", ".join(
        f"{c}.keys_text AS {c}_keys, {c}.values_text AS {c}_values, "
        f"{c}.queryparam AS {c}_queryparam" for c in DATA_CHANNELS
    )
    channel_joins = " ".join(
        f"LEFT JOIN message_key_values {c} ON {c}.message_id = m.id"
        f" AND {c}.channel = '{c}' AND {c}.ordinal = 0" for c in DATA_CHANNELS
    )
    columns = ", ".join(f"m.{name}" for name in MESSAGE_COLUMNS.split(", "))
    return (
        f"CREATE VIEW message_report AS SELECT {columns}, {channel_columns},"
        " (SELECT count(*) FROM message_attachments a WHERE a.message_id = m.id)"
        " AS attachment_count,"
        " (SELECT count(*) FROM message_key_values r WHERE r.message_id = m.id"
        " AND r.channel = 'read_map') AS read_map_count,"
        f" {READ_MAP[dialect]} AS read_map"
        f" FROM messages m {channel_joins}"
    )


def message_daily_counts(dialect: str) -> str:
    return (
        f"CREATE VIEW message_daily_counts AS SELECT organization, type, {DAY[dialect]} AS day,"
        " count(*) AS messages,"
        " sum(CASE WHEN is_system_gen THEN 1 ELSE 0 END) AS system_generated,"
        " sum(CASE WHEN is_deleted THEN 1 ELSE 0 END) AS deleted"
        " FROM messages GROUP BY 1, 2, 3"
    )


UNREAD_PER_ASSIGNEE = (
    "CREATE VIEW unread_per_assignee AS SELECT organization, user_id AS assignee,"
    " count(*) AS unread, min(creation_time) AS oldest_unread"
    " FROM messages WHERE NOT is_assignee_read AND NOT is_deleted"
    " GROUP BY organization, user_id"
)

COMMENTS = {
    "message_report": (
        "One row per message: its columns, its email/sms/api/beep data flattened into "
        "<channel>_keys, <channel>_values, <channel>_queryparam (null where absent), its "
        "attachment and read-map counts, and its read map as JSON.",
        {"attachment_count": "How many attachment ids the message has.",
         "read_map_count": "How many message_read_map entries the message has.",
         "read_map": 'The message_read_map as the API shows it: a JSON array of '
                     '{"keys", "values", "queryparam"}, in order.'},
    ),
    "message_daily_counts": (
        "Messages per organization, type and day of creation_time (UTC), deleted ones "
        "included.",
        {"day": "The UTC date of creation_time (null for messages without one).",
         "messages": "How many messages.",
         "system_generated": "How many of them are system-generated (is_system_gen).",
         "deleted": "How many of them are marked deleted (is_deleted)."},
    ),
    "unread_per_assignee": (
        "Messages not read by their assignee (is_assignee_read false, not deleted) per "
        "organization and assignee (the message's user_id).",
        {"assignee": "The user the messages belong to (messages.user_id).",
         "unread": "How many unread messages.",
         "oldest_unread": "The creation_time of the oldest of them."},
    ),
}


def create_indexes(dialect: str) -> None:
    """Built CONCURRENTLY on PostgreSQL, as in 0002: a live table keeps taking writes."""
    unread = sa.text("NOT is_assignee_read AND NOT is_deleted")
    with op.get_context().autocommit_block():
        if dialect == "postgresql":
            op.create_index(
                "ix_messages_organization_creation_day", "messages",
                ["organization", sa.text("((creation_time AT TIME ZONE 'UTC')::date)")],
                postgresql_concurrently=True, if_not_exists=True)
        op.create_index("ix_messages_unread", "messages", ["organization", "user_id"],
                        postgresql_include=["creation_time"], postgresql_where=unread,
                        sqlite_where=unread, postgresql_concurrently=True, if_not_exists=True)


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    create_indexes(dialect)
    op.execute(message_report(dialect))
    op.execute(message_daily_counts(dialect))
    op.execute(UNREAD_PER_ASSIGNEE)
    if dialect != "postgresql":
        return
    for view, (comment, columns) in COMMENTS.items():
        op.execute(f"COMMENT ON VIEW {view} IS {quoted(comment)}")
        for column, column_comment in columns.items():
            op.execute(f"COMMENT ON COLUMN {view}.{column} IS {quoted(column_comment)}")


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def downgrade() -> None:
    for view in COMMENTS:
        op.execute(f"DROP VIEW {view}")
    with op.get_context().autocommit_block():
        for name in ("ix_messages_unread", "ix_messages_organization_creation_day"):
            op.drop_index(name, "messages", postgresql_concurrently=True, if_exists=True)
