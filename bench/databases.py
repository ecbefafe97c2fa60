"""The benchmarks' PostgreSQL databases: made anew and migrated to head."""
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent


def fresh_database(server: str, name: str) -> str:
    """Drop and create database `name` on `server` (a URL without a database), run the
    migrations on it, and return its URL."""
    engine = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return migrated(f"{server}/{name}")


def migrated(url: str) -> str:
    """`url`, after `alembic upgrade head` on it."""
    subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={url}", "upgrade", "head"],
                   cwd=ROOT, check=True, capture_output=True)
    return url
