"""`flask retention` on bench/scale.py's 10,000,000 messages (twelve monthly partitions and a
part), on a copy of that database (CREATE DATABASE ... TEMPLATE), dropped afterwards:

    .venv/bin/python bench/retention.py

It times, through the real command: a dry run; the removal of the two oldest months (a
partition dropped whole each); the removal of half of the next month (a partition trimmed,
in batches); and the same command again (nothing left to remove).
"""
import os
import subprocess
import sys
import time
from datetime import date

from sqlalchemy import create_engine, text

from scale import ROOT, SERVER, SIZES, seed

COPY = "messenger_retention_bench"


def copy_of(url: str) -> str:
    server = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {COPY}"))
        connection.execute(text(f"CREATE DATABASE {COPY} TEMPLATE {url.rsplit('/', 1)[1]}"))
    server.dispose()
    return f"{SERVER}/{COPY}"


def oldest_month(url: str) -> date:
    engine = create_engine(url)
    with engine.connect() as connection:
        oldest = connection.scalar(text("SELECT min(event_time) FROM messages"))
    engine.dispose()
    return date(oldest.year, oldest.month, 1)


def months_after(month: date, count: int) -> date:
    total = month.year * 12 + month.month - 1 + count
    return date(total // 12, total % 12 + 1, 1)


def retention(url: str, *args: str) -> None:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "retention", *args],
                          cwd=ROOT, env={**os.environ, "DATABASE_URL": url},
                          capture_output=True, text=True, check=True)
    took = time.perf_counter() - started
    print(f"retention {' '.join(args)}: {took:.2f} s")
    print("".join(f"    {line}\n" for line in done.stdout.splitlines()), end="", flush=True)


def main() -> None:
    started = time.perf_counter()
    url = copy_of(seed("10m", SIZES["10m"], reseed=False))
    print(f"copied the 10,000,000-message database in {time.perf_counter() - started:.0f} s")
    try:
        first = oldest_month(url)
        two_months, half_month = months_after(first, 2), months_after(first, 2).replace(day=16)
        retention(url, "--before", f"{two_months}", "--dry-run")
        retention(url, "--before", f"{two_months}")
        retention(url, "--before", f"{half_month}")
        retention(url, "--before", f"{half_month}")
    finally:
        server = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with server.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {COPY} WITH (FORCE)"))
        server.dispose()


if __name__ == "__main__":
    main()
