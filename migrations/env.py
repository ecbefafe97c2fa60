"""Alembic environment: the service's metadata, and its DATABASE_URL unless `-x url=` is given.
On PostgreSQL each migration transaction has a lock_timeout and a statement_timeout
(docs/migrations.md, "Timeouts")."""
import os
import sys
from logging.config import fileConfig

from alembic import context
from sqlalchemy import event

from messenger_app.config import from_environment
from messenger_app.db import make_engine
from messenger_app.models import Base
from messenger_app.partitions import include_name, include_object_on

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    return (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or from_environment(os.environ)["DATABASE_URL"]
    )


# 3 s: a migration waiting for a lock holds up the requests queued behind it no longer than
# that, well within their own 10 s. 1 min: enough for 0009's rewrite of a few million
# messages (11 s at 1,000,000); a statement that would stop the service for longer is
# planned downtime, for which the operator raises it.
DEFAULT_TIMEOUTS = {"lock_timeout": "3s", "statement_timeout": "1min"}


def set_statements(scope: str, settings: dict[str, str]) -> list[str]:
    return ["SET {}{} = '{}'".format(scope, name, value.replace("'", "''"))
            for name, value in settings.items()]


def transaction_timeouts() -> list[str]:
    """`-x lock_timeout=...`, else MIGRATION_LOCK_TIMEOUT, else the default; the same for
    statement_timeout. SET LOCAL: they end with the transaction."""
    given = context.get_x_argument(as_dictionary=True)
    return set_statements("LOCAL ", {
        name: given.get(name) or os.environ.get(f"MIGRATION_{name.upper()}", default)
        for name, default in DEFAULT_TIMEOUTS.items()})


# Outside transactions, none, whatever the role's settings: Alembic's autocommit blocks
# (CREATE INDEX CONCURRENTLY, VACUUM) block no reads or writes, and a timeout would leave
# an INVALID index behind, which a rerun's `if_not_exists` would then skip.
NO_TIMEOUTS = set_statements("", dict.fromkeys(DEFAULT_TIMEOUTS, "0"))


class TimeoutsAfterBegin:
    """The offline script, with the transaction's timeouts after each BEGIN."""

    def __init__(self, stream, statements: list[str]) -> None:
        self.stream, self.statements = stream, statements

    def write(self, text: str) -> None:
        self.stream.write(text)
        if text.startswith("BEGIN;"):
            self.stream.write("".join(f"{statement};\n\n" for statement in self.statements))

    def flush(self) -> None:
        self.stream.flush()


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: write the SQL script instead of running it."""
    url = database_url()
    postgresql = url.startswith("postgresql")
    output = config.output_buffer or sys.stdout
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      output_buffer=TimeoutsAfterBegin(output, transaction_timeouts())
                      if postgresql else output)
    for statement in NO_TIMEOUTS if postgresql else []:
        context.execute(statement)
    with context.begin_transaction():
        context.run_migrations()


def set_transaction_timeouts(connection) -> None:
    if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        for statement in transaction_timeouts():
            connection.exec_driver_sql(statement)


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch mode rebuilds a table to alter it (copy, drop, rename): with foreign
            # keys on, dropping `messages` would cascade to its children.
            connection.exec_driver_sql("PRAGMA foreign_keys = OFF")
            # ... and renaming the copy back would check the views on `messages`, which
            # name a table that is gone for the moment; the legacy rename leaves them be.
            connection.exec_driver_sql("PRAGMA legacy_alter_table = ON")
            connection.commit()  # leaves no transaction open for Alembic to trip over
        else:
            for statement in NO_TIMEOUTS:
                connection.exec_driver_sql(statement)
            connection.commit()
            event.listen(connection, "begin", set_transaction_timeouts)
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs via batch mode
            include_name=include_name,
            include_object=include_object_on(connection.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
