"""The schema comes from Alembic alone: upgrade, downgrade, agreement with the models, and
column names and types a DBA and an analyst can work with."""
import argparse
import hashlib
import io
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql.compiler import RESERVED_WORDS as ANSI_RESERVED_WORDS

from helpers import alembic_config, fresh_database, on_postgresql
from messenger_app.config import PROJECT_ROOT
from messenger_app.models import Base
from messenger_app.partitions import include_name, include_object_on, is_partition

TABLES = {"messages", "message_attachments", "message_key_values", "api_keys",
          "idempotency_keys", "message_events"}


@pytest.fixture
def empty_database(backend, tmp_path_factory):
    return fresh_database(backend, tmp_path_factory, "migrations")


def table_names(url: str) -> set[str]:
    """The tables, without the partitions of the partitioned ones (migration 0010)."""
    engine = create_engine(url)
    try:
        return {name for name in inspect(engine).get_table_names() if not is_partition(name)}
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


@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_migrations_and_models_agree(database_url):
    """`alembic check`: autogenerate would find nothing to add. (SQLite can't reflect the
    PostgreSQL-only expression index, which Alembic says in a warning.)"""
    command.check(alembic_config(database_url))
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={
                "compare_type": True, "include_name": include_name,
                "include_object": include_object_on(connection.dialect.name)})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_migrations_keep_the_data_already_there(empty_database, make_app):
    """Upgrading a database that has messages and keys, and downgrading it again."""
    config = alembic_config(empty_database)
    command.upgrade(config, "0003")
    engine = create_engine(empty_database)
    secret = "msk_" + "k" * 43
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO messages (id, event_time, organization) "
            "VALUES ('0123456789abcdef01234567', CURRENT_TIMESTAMP, 'acme')"))
        connection.execute(text(
            "INSERT INTO message_attachments VALUES ('0123456789abcdef01234567', 0, 'a')"))
        connection.execute(text(
            "INSERT INTO api_keys (name, organization, all_organizations, key_digest, "
            "key_prefix, created_at) VALUES ('old', 'acme', false, :digest, :prefix, "
            "CURRENT_TIMESTAMP)"), {"digest": hashlib.sha256(secret.encode()).hexdigest(),
                                    "prefix": secret[:12]})
    engine.dispose()

    command.upgrade(config, "head")
    client = make_app({"DATABASE_URL": empty_database}).test_client()
    read = client.get("/ux/common/messenger/sms/0123456789abcdef01234567/",
                      headers={"Authorization": secret})
    assert read.status_code == 200, read.get_json()
    assert read.get_json()["attachment_ids"] == ["a"] and read.headers["ETag"] == '"1"'

    command.downgrade(config, "0003")
    engine = create_engine(empty_database)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM message_attachments")) == 1
        assert connection.scalar(text("SELECT count(*) FROM api_keys")) == 1
    engine.dispose()
    command.downgrade(config, "base")


A_LATER_MIGRATION = """
import sqlalchemy as sa
from alembic import op

revision = "later"
down_revision = "{head}"


def rebuilt(table):  # on SQLite: copy, drop, rename; elsewhere a plain ALTER
    sqlite = op.get_context().dialect.name == "sqlite"
    return op.batch_alter_table(table, recreate="always" if sqlite else "auto")


def upgrade():
    with rebuilt("messages") as batch:
        batch.add_column(sa.Column("later", sa.Integer))


def downgrade():
    with rebuilt("messages") as batch:
        batch.drop_column("later")
"""


def add_a_later_migration(config, folder, source: str) -> str:
    """A throwaway revision after head, from `source` (with `{head}` in it), in `folder`;
    `config` finds it. Returns the head it follows."""
    head = ScriptDirectory.from_config(config).get_current_head()
    (folder / "later.py").write_text(source.format(head=head))
    versions = [str(PROJECT_ROOT / "migrations" / "versions"), str(folder)]
    config.set_main_option("version_locations", os.pathsep.join(versions))
    return head


def test_a_later_migration_can_rebuild_messages_under_the_views(empty_database, tmp_path):
    """SQLite's batch mode copies, drops and renames `messages`, which the reporting views
    name; env.py makes that work (and PostgreSQL alters in place)."""
    config = alembic_config(empty_database)
    command.upgrade(config, "head")
    head = add_a_later_migration(config, tmp_path, A_LATER_MIGRATION)
    engine = create_engine(empty_database)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO messages (id, event_time, organization) "
            "VALUES ('0123456789abcdef01234567', CURRENT_TIMESTAMP, 'acme')"))

    command.upgrade(config, "later")
    command.downgrade(config, head)

    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM message_report")) == 1
        assert connection.scalar(text("SELECT sum(messages) FROM message_daily_counts")) == 1
    engine.dispose()


def test_the_offline_sql_script_builds_the_schema_with_psql(tmp_path_factory):
    """`alembic upgrade head --sql` gives a PostgreSQL script a DBA can review and apply."""
    url = fresh_database("postgresql", tmp_path_factory, "offline")
    script = io.StringIO()
    config = alembic_config(url)
    config.output_buffer = script
    command.upgrade(config, "head", sql=True)
    assert script.getvalue().count("BEGIN;") == script.getvalue().count(
        "BEGIN;\n\nSET LOCAL lock_timeout = '3s';\n\nSET LOCAL statement_timeout = '1min';")

    libpq_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", libpq_url], input=script.getvalue(),
                   text=True, check=True, capture_output=True)

    assert table_names(url) == TABLES | {"alembic_version"}
    command.check(alembic_config(url))


def test_date_times_are_timezone_aware_and_children_cascade(database_url, backend):
    engine = create_engine(database_url)
    try:
        inspector = inspect(engine)
        for table in TABLES:
            for column in inspector.get_columns(table):
                is_date_time = "time" in column["name"] or column["name"].endswith("_at")
                if is_date_time and on_postgresql(backend):  # SQLite has no such type
                    assert column["type"].timezone, column
        # On PostgreSQL each child partition refers to the messages partition of its month.
        suffixes = [name.removeprefix("messages_") for name in inspector.get_table_names()
                    if is_partition(name) and name.startswith("messages_")]
        assert bool(suffixes) == on_postgresql(backend)
        for child in ("message_attachments", "message_key_values"):
            pairs = [(f"{child}_{suffix}", f"messages_{suffix}") for suffix in suffixes]
            for table, messages_table in pairs or [(child, "messages")]:
                (foreign_key,) = inspector.get_foreign_keys(table)
                assert foreign_key["referred_table"] == messages_table, table
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


def test_every_table_and_column_is_commented_in_postgresql(database_url, backend):
    """What `\\d+` shows a DBA; SQLite keeps no comments, so its leg checks the models."""
    for table in Base.metadata.tables.values():
        assert table.comment and all(column.comment for column in table.columns), table.name
    if not on_postgresql(backend):
        return
    engine = create_engine(database_url)
    try:
        inspector = inspect(engine)
        for table in TABLES:
            assert inspector.get_table_comment(table)["text"], table
            for column in inspector.get_columns(table):
                assert column["comment"], (table, column["name"])
    finally:
        engine.dispose()


def test_the_schema_diagram_matches_the_models():
    """docs/schema.md's Mermaid diagram: every table, column, key and relationship."""
    document = (PROJECT_ROOT / "docs" / "schema.md").read_text()
    diagram = re.search(r"```mermaid\n(.*?)```", document, re.S).group(1)
    drawn = {name: body for name, body in re.findall(r"(\w+) \{\n(.*?)\n\s*\}", diagram, re.S)}

    assert set(drawn) == set(Base.metadata.tables)
    for name, table in Base.metadata.tables.items():
        columns = {}
        for line in drawn[name].splitlines():
            _type, column, *keys = line.replace(",", " ").split()
            columns[column] = set(keys)
        assert columns == {
            column.name: {key for key, has in (("PK", column.primary_key),
                                               ("FK", bool(column.foreign_keys))) if has}
            for column in table.columns
        }, name
    relations = set(re.findall(r"(\w+) \|\|--o\{ (\w+)", diagram))
    assert relations == {(fk.column.table.name, table.name)
                         for table in Base.metadata.tables.values()
                         for fk in table.foreign_keys}


def insert_message(connection, message_id: str, msg_type, module_id) -> None:
    connection.execute(text(
        "INSERT INTO messages (id, event_time, msg_type, module_id) "
        "VALUES (:id, CURRENT_TIMESTAMP, :msg_type, :module_id)"),
        {"id": message_id, "msg_type": msg_type, "module_id": module_id})


def stored_integers(connection) -> list[tuple]:
    return [tuple(row) for row in connection.execute(text(
        "SELECT id, msg_type, module_id FROM message_report ORDER BY id"))]


def test_0009_widens_the_integers_and_keeps_them(empty_database):
    config = alembic_config(empty_database)
    command.upgrade(config, "0008")
    engine = create_engine(empty_database)
    with engine.begin() as connection:
        insert_message(connection, "a" * 24, 2**31 - 1, -(2**31))
        insert_message(connection, "b" * 24, None, 7)

    command.upgrade(config, "0009")
    with engine.begin() as connection:
        insert_message(connection, "c" * 24, 2**63 - 1, -(2**63))
        assert stored_integers(connection) == [
            ("a" * 24, 2**31 - 1, -(2**31)), ("b" * 24, None, 7),
            ("c" * 24, 2**63 - 1, -(2**63))]
        connection.execute(text("DELETE FROM messages WHERE id = :id"), {"id": "c" * 24})
    command.downgrade(config, "0008")
    with engine.connect() as connection:
        assert stored_integers(connection) == [("a" * 24, 2**31 - 1, -(2**31)),
                                               ("b" * 24, None, 7)]
    engine.dispose()


def online_bigint_recipe() -> tuple[list[str], str]:
    """docs/migrations.md's online way to 0009: its SQL steps, and the shell commands."""
    document = (PROJECT_ROOT / "docs" / "migrations.md").read_text()
    section = document[document.index("## 0009"):document.index("## 0010")]
    return (re.findall(r"```sql\n(.*?)```", section, re.S),
            re.search(r"```bash\n(.*?)```", section, re.S).group(1))


def test_the_documented_online_way_to_0009_gives_0009s_schema(tmp_path_factory):
    """A DBA with a large table follows docs/migrations.md instead of running 0009: the
    rows keep their values, rows written meanwhile are copied, and Alembic then finds the
    schema that 0009 would have made."""
    url = fresh_database("postgresql", tmp_path_factory, "online")
    config = alembic_config(url)
    command.upgrade(config, "0008")
    libpq_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    engine = create_engine(url)
    with engine.begin() as connection:  # more than two of the recipe's batches
        connection.execute(text(
            "INSERT INTO messages (id, event_time, msg_type, module_id)"
            " SELECT lpad(to_hex(n), 24, '0'), CURRENT_TIMESTAMP, n,"
            " CASE WHEN n % 2 = 0 THEN -n END FROM generate_series(0, 24999) AS n"))
    (add_columns, backfill, swap), shell = online_bigint_recipe()

    def psql(script: str) -> None:
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", libpq_url], input=script,
                       text=True, check=True, capture_output=True)

    psql(add_columns)
    with engine.begin() as connection:  # written while the old columns are still in use
        insert_message(connection, "f" * 24, 2**31 - 1, 5)
    psql(backfill)
    psql(swap)
    subprocess.run(["bash", "-e", "-c", shell], cwd=PROJECT_ROOT, check=True,
                   capture_output=True, env={**os.environ, "DATABASE_URL": url,
                                             "LIBPQ_URL": libpq_url})

    assert revision_state(url)[0] == "0009"
    command.upgrade(config, "head")
    command.check(config)  # the schema 0009 makes (types, comments), and the later ones'
    with engine.begin() as connection:
        rows = stored_integers(connection)
        insert_message(connection, "e" * 24, 2**63 - 1, -(2**63))
        view_comment = connection.scalar(text(
            "SELECT obj_description('message_report'::regclass)"))
    assert len(rows) == 25_001 and rows[-1] == ("f" * 24, 2**31 - 1, 5)
    assert rows[:3] == [(f"{0:024x}", 0, 0), (f"{1:024x}", 1, None), (f"{2:024x}", 2, -2)]
    assert view_comment.startswith("One row per message")
    engine.dispose()


def online_partitioning_recipe() -> str:
    """docs/migrations.md's online steps before 0010: its SQL blocks, as one psql script."""
    document = (PROJECT_ROOT / "docs" / "migrations.md").read_text()
    section = document[document.index("## 0010"):document.index("## 0012")]
    return "\n".join(re.findall(r"```sql\n(.*?)```", section, re.S))


def sequential_scans(engine, tables: list[str]) -> dict[int, int]:
    """How many times each table was read whole, by its oid (which a rename keeps)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return dict(connection.execute(text(
            "SELECT relid, seq_scan FROM pg_stat_user_tables WHERE relname = ANY(:tables)"),
            {"tables": tables}).all())


def test_the_documented_online_way_to_0010_leaves_the_migration_nothing_to_read(
        tmp_path_factory):
    """A DBA with a large table runs docs/migrations.md's statements while the service
    writes, then 0010: the migration reads no row of the old tables (their sequential
    scans don't move), keeps every row, and Alembic finds 0010's schema."""
    url = fresh_database("postgresql", tmp_path_factory, "online_partitions")
    config = alembic_config(url)
    command.upgrade(config, "0009")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO messages (id, event_time) SELECT lpad(to_hex(1560000000 + n), 8, '0')"
            " || lpad(to_hex(n), 16, '0'), now() FROM generate_series(1, 3000) AS n"))
        connection.execute(text("INSERT INTO message_attachments SELECT id, 0, 'a' FROM messages"))
    libpq_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    writing, written = threading.Event(), []

    def write_meanwhile() -> None:
        with engine.connect() as connection:
            while not writing.is_set():
                message_id = f"{int(time.time()):08x}{len(written):016x}"
                connection.execute(text("INSERT INTO messages (id, event_time) VALUES (:id,"
                                        " now())"), {"id": message_id})
                connection.execute(text("INSERT INTO message_attachments VALUES (:id, 0, 'a')"),
                                   {"id": message_id})
                connection.commit()
                written.append(message_id)

    writer = threading.Thread(target=write_meanwhile)
    writer.start()
    try:
        recipe = subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", libpq_url],
                                input=online_partitioning_recipe(), text=True,
                                capture_output=True)
        assert recipe.returncode == 0, recipe.stderr
    finally:
        writing.set()
        writer.join()
    old_tables = ["messages", "message_attachments", "message_key_values"]
    scans_before = sequential_scans(engine, old_tables)
    command.upgrade(config, "0010")
    time.sleep(1.5)  # statistics reach the shared counters within a second
    scans_after = sequential_scans(engine, [f"{table}_legacy" for table in old_tables])

    assert written and scans_after == scans_before
    command.upgrade(config, "head")  # (0012 validates the legacy partitions' keys: a read)
    command.check(config)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM messages")) == 3000 + len(written)
        assert connection.scalar(text(
            "SELECT count(*) FROM messages_legacy WHERE id = :id"), {"id": written[-1]}) == 1
        assert connection.scalar(text(
            "SELECT count(*) FROM message_attachments JOIN messages ON id = message_id")
        ) == 3000 + len(written)
    engine.dispose()


# --- Timeouts and the migration linter ----------------------------------------------------

def offline_sql_per_revision(directory: Path) -> list[str]:
    """Each revision's `alembic upgrade <previous>:<revision> --sql`, in a file named after the
    revision's; their names, in order."""
    config = alembic_config("postgresql+psycopg://")  # offline: the dialect, no server
    names = []
    for script in reversed(list(ScriptDirectory.from_config(config).walk_revisions())):
        config.output_buffer = io.StringIO()
        start = f"{script.down_revision}:" if script.down_revision else ""
        command.upgrade(config, start + script.revision, sql=True)
        names.append(Path(script.path).stem + ".sql")
        (directory / names[-1]).write_text(config.output_buffer.getvalue())
    return names


def test_squawk_finds_nothing_to_fix_in_the_offline_sql(tmp_path):
    """squawk, the migration linter, over every revision's SQL but those that .squawk.toml
    leaves out, whose findings were each reviewed there."""
    names = offline_sql_per_revision(tmp_path)
    config = PROJECT_ROOT / ".squawk.toml"
    lint = subprocess.run([Path(sys.executable).parent / "squawk", "--config", config, *names],
                          cwd=tmp_path, capture_output=True, text=True)

    assert lint.returncode == 0, lint.stdout + lint.stderr
    unreviewed = [name for name in names if name not in config.read_text()]
    checked = re.search(r"Found 0 issues in (\d+) files?", lint.stdout)
    assert unreviewed and checked and int(checked.group(1)) == len(unreviewed), lint.stdout


def revision_state(url: str) -> tuple[str, bool]:
    """The database's revision, and whether messages has row_version (0004's column)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            revision = connection.scalar(text("SELECT version_num FROM alembic_version"))
        columns = {column["name"] for column in inspect(engine).get_columns("messages")}
        return revision, "row_version" in columns
    finally:
        engine.dispose()


def wait_until_blocked_by(url: str, pid: int) -> None:
    """Until a session waits for a lock that the session `pid` holds."""
    engine = create_engine(url)
    deadline = time.monotonic() + 10
    with engine.connect() as connection:
        while not connection.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                {"pid": pid}):
            assert time.monotonic() < deadline, "the migration never waited for the report"
            time.sleep(0.05)
    engine.dispose()


def test_a_migration_gives_up_rather_than_queue_behind_a_long_report(tmp_path_factory,
                                                                      monkeypatch):
    """0004's ALTER TABLE needs messages to itself. Behind a report's open transaction it
    waits lock_timeout (1 s here), not for the report, and so do the requests queued behind
    it; then it stops, changing nothing, and runs once the report is done."""
    url = fresh_database("postgresql", tmp_path_factory, "locks")
    config = alembic_config(url)
    command.upgrade(config, "0003")
    monkeypatch.setenv("MIGRATION_LOCK_TIMEOUT", "1s")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    failures = []

    def migrate() -> None:
        try:
            command.upgrade(config, "0004")
        except OperationalError as error:
            failures.append(error)

    with engine.connect() as report, engine.connect() as request:
        request.exec_driver_sql("SET statement_timeout = '10s'")  # as the service's requests
        report.exec_driver_sql("BEGIN")
        report.exec_driver_sql("SELECT count(*) FROM messages")  # its lock lasts until COMMIT
        migration = threading.Thread(target=migrate)
        migration.start()
        wait_until_blocked_by(url, report.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        started = time.monotonic()
        request.exec_driver_sql("SELECT count(*) FROM messages")  # queued behind the ALTER
        request_waited = time.monotonic() - started
        migration.join()
        assert revision_state(url) == ("0003", False)
        report.exec_driver_sql("COMMIT")
    engine.dispose()

    assert len(failures) == 1 and "lock timeout" in str(failures[0])
    assert request_waited < 3
    command.upgrade(config, "0004")
    assert revision_state(url) == ("0004", True)


A_MIGRATION_THAT_RECORDS_ITS_TIMEOUTS = """
from alembic import op

revision = "timeouts"
down_revision = "{head}"
SEEN = ("SELECT '{{}}', current_setting('lock_timeout'), current_setting('statement_timeout')")


def upgrade():
    op.execute("CREATE TABLE seen (place text, lock_timeout text, statement_timeout text)")
    op.execute("INSERT INTO seen " + SEEN.format("transaction"))
    with op.get_context().autocommit_block():
        op.execute("INSERT INTO seen " + SEEN.format("autocommit block"))
    op.execute("INSERT INTO seen " + SEEN.format("next transaction"))


def downgrade():
    op.execute("DROP TABLE seen")
"""


def timeouts_seen(config, url: str) -> dict[str, tuple[str, str]]:
    """Run A_MIGRATION_THAT_RECORDS_ITS_TIMEOUTS (and back): its timeouts, by where it was."""
    command.upgrade(config, "timeouts")
    engine = create_engine(url)
    with engine.connect() as connection:
        seen = {place: (lock, statement) for place, lock, statement
                in connection.execute(text("SELECT * FROM seen"))}
    engine.dispose()
    command.downgrade(config, "-1")
    return seen


def test_migrations_run_with_timeouts_in_transactions_and_none_outside(
        tmp_path_factory, tmp_path, monkeypatch):
    """Defaults, the environment, then `-x`; outside a transaction (CONCURRENTLY index
    builds, VACUUM) none, even where the database sets one."""
    url = fresh_database("postgresql", tmp_path_factory, "timeouts")
    config = alembic_config(url)
    command.upgrade(config, "head")
    head = add_a_later_migration(config, tmp_path, A_MIGRATION_THAT_RECORDS_ITS_TIMEOUTS)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        database = make_url(url).database
        connection.exec_driver_sql(f'ALTER DATABASE "{database}" SET statement_timeout = 5000')
    engine.dispose()

    assert timeouts_seen(config, url) == {"transaction": ("3s", "1min"),
                                          "autocommit block": ("0", "0"),
                                          "next transaction": ("3s", "1min")}
    monkeypatch.setenv("MIGRATION_LOCK_TIMEOUT", "500ms")
    monkeypatch.setenv("MIGRATION_STATEMENT_TIMEOUT", "2h")
    assert timeouts_seen(config, url)["transaction"] == ("500ms", "2h")
    config.cmd_opts = argparse.Namespace(x=["statement_timeout=0"])
    assert timeouts_seen(config, url)["transaction"] == ("500ms", "0")


def test_a_new_database_is_not_analysed_as_empty(tmp_path_factory):
    """Statistics of an empty messages table ("no rows") would keep the plans made while it
    fills (foreign key checks, prepared statements) on whole-table scans where autovacuum
    is off: 0009 vacuums and analyses a table with rows only."""
    url = fresh_database("postgresql", tmp_path_factory, "statistics")
    command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.scalar(text(
            "SELECT reltuples FROM pg_class WHERE relname = 'messages'")) == -1  # unknown
    engine.dispose()
