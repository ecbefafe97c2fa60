"""Alembic environment: the service's metadata, and its DATABASE_URL unless `-x url=` is given."""
from logging.config import fileConfig

from alembic import context

from messenger_app.config import Config
from messenger_app.extensions import make_engine
from messenger_app.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    return (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or Config.DATABASE_URL
    )


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: write the SQL script instead of running it."""
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


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
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs via batch mode
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
