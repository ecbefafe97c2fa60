"""What one migration locks, and for how long, on the 1,000,000-message database of
bench/scale.py (seeded first if missing):

    .venv/bin/python bench/migration_lock.py 0009     # downgrades to 0009's parent first
    .venv/bin/python bench/migration_lock.py 0010 --online

It steps the database back to the revision before the one named, then upgrades to it while
a client reads one message by id and updates another, each in a loop on its own
connection, and reports how long the upgrade took and the longest either client waited.
With --online, docs/migrations.md's online steps for that revision run first (through
psql, timed apart), as a DBA would run them on a live system.
"""
import argparse
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scale import SIZES, seed  # noqa: E402


def probe(url: str, statement: str, stop: threading.Event, waits: list) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        message_id = connection.scalar(text("SELECT min(id) FROM messages"))
        while not stop.is_set():
            started = time.perf_counter()
            connection.execute(text(statement), {"id": message_id})
            waits.append((started, time.perf_counter() - started))
            time.sleep(0.01)
    engine.dispose()


def online_steps(revision: str) -> str:
    """The SQL of docs/migrations.md's section on `revision`, as one psql script."""
    document = (ROOT / "docs" / "migrations.md").read_text()
    section = document[document.index(f"## {revision}"):].split("\n## ")[0]
    return "\n".join(re.findall(r"```sql\n(.*?)```", section, re.S))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
    parser.add_argument("--online", action="store_true")
    args = parser.parse_args()
    url = seed("1m", SIZES["1m"], reseed=False)
    config = AlembicConfig(str(ROOT / "alembic.ini"))
    config.attributes["url"] = url
    parent = ScriptDirectory.from_config(config).get_revision(args.revision).down_revision
    command.downgrade(config, parent)
    stop = threading.Event()
    probes = {"read one message": "SELECT id, ref_id FROM messages WHERE id = :id",
              "update one message": "UPDATE messages SET row_version = row_version + 1 "
                                    "WHERE id = :id"}
    waits = {name: [] for name in probes}
    threads = [threading.Thread(target=probe, args=(url, statement, stop, waits[name]))
               for name, statement in probes.items()]
    for thread in threads:
        thread.start()
    time.sleep(1)
    online_started = time.perf_counter()
    if args.online:
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1",
                        url.replace("postgresql+psycopg", "postgresql")],
                       input=online_steps(args.revision), text=True, check=True)
        print(f"online steps: {time.perf_counter() - online_started:.1f} s")
    started = time.perf_counter()
    command.upgrade(config, args.revision)
    took = time.perf_counter() - started
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join()
    command.upgrade(config, "head")
    print(f"upgrade {parent} -> {args.revision} on 1,000,000 messages: {took:.2f} s")
    for name, samples in waits.items():
        during = [wait for at, wait in samples if online_started <= at < started]
        after = [wait for at, wait in samples if at >= started]
        print(f"{name}: {len(samples)} statements, longest {max(w for _, w in samples):.2f} s;"
              f" during the online steps {max(during, default=0):.2f} s,"
              f" from the upgrade on {max(after, default=0):.2f} s")


if __name__ == "__main__":
    main()
