"""The schema comes from Alembic alone: upgrade, downgrade, agreement with the models, and
column names and types a DBA and an analyst can work with."""
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.compiler import RESERVED_WORDS as ANSI_RESERVED_WORDS

from conftest import alembic_config, fresh_database
from messenger_app.models import Base

TABLES = {"messages", "message_attachments", "message_key_values", "api_keys"}


@pytest.fixture
def empty_database(backend, tmp_path_factory):
    return fresh_database(backend, tmp_path_factory, "migrations")


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_to_head_and_downgrade_to_base_round_trip(empty_database):
    config = alembic_config(empty_database)

    command.upgrade(config, "head")
    assert table_names(empty_database) == TABLES | {"alembic_version"}
    command.downgrade(config, "base")
    assert table_names(empty_database) == {"alembic_version"}
    command.upgrade(config, "head")
    assert table_names(empty_database) == TABLES | {"alembic_version"}


def test_migrations_and_models_agree(database_url):
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_date_times_are_timezone_aware_and_children_cascade(database_url, backend):
    engine = create_engine(database_url)
    try:
        inspector = inspect(engine)
        for table in TABLES:
            for column in inspector.get_columns(table):
                is_date_time = "time" in column["name"] or column["name"].endswith("_at")
                if is_date_time and backend == "postgresql":  # SQLite has no such type
                    assert column["type"].timezone, column
        for table in ("message_attachments", "message_key_values"):
            (foreign_key,) = inspector.get_foreign_keys(table)
            assert foreign_key["referred_table"] == "messages"
            assert foreign_key["options"]["ondelete"] == "CASCADE"
    finally:
        engine.dispose()


def test_no_table_or_column_needs_quoting_in_sql():
    reserved = (ANSI_RESERVED_WORDS | postgresql.base.RESERVED_WORDS
                | sqlite.base.SQLiteIdentifierPreparer.reserved_words
                | mysql.reserved_words.RESERVED_WORDS_MYSQL)
    for table in Base.metadata.tables.values():
        for name in [table.name, *table.columns.keys()]:
            assert name.lower() not in reserved, name
            assert name == name.lower() and name.isidentifier(), name
