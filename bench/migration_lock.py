"""What one migration locks, and for how long, on the 1,000,000-message database of
bench/scale.py (seeded first if missing):

    .venv/bin/python bench/migration_lock.py 0009     # downgrades to 0009's parent first

It steps the database back to the revision before the one named, then upgrades to it while
a client reads one message by id and updates another, each in a loop on its own
connection, and reports how long the upgrade took and the longest either client waited.
"""
import argparse
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
            waits.append(time.perf_counter() - started)
            time.sleep(0.01)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision")
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
    started = time.perf_counter()
    command.upgrade(config, args.revision)
    took = time.perf_counter() - started
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join()
    command.upgrade(config, "head")
    print(f"upgrade {parent} -> {args.revision} on 1,000,000 messages: {took:.1f} s")
    for name, samples in waits.items():
        print(f"{name}: {len(samples)} statements, longest {max(samples):.2f} s")


if __name__ == "__main__":
    main()
