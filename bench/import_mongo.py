"""`flask import-mongo` and `flask export` at 100,000 and 1,000,000 messages on PostgreSQL.

    .venv/bin/python bench/import_mongo.py                     # 100,000 then 1,000,000
    .venv/bin/python bench/import_mongo.py --sizes 20000 --canonical

For each size it writes that many realistic documents as `mongoexport` would (JSON lines,
Extended JSON relaxed by default, streamed to a file), recreates the database
messenger_bench_import (`alembic upgrade head`), then runs, each as its own process: the
import, the same import again (every document is stored already: all skipped), and the
export of every message. It reports wall time, documents per second and the peak resident
memory of each process (from wait4). Peak memory that stays put from 100,000 to 1,000,000
is what shows the streaming. BENCH_SERVER_URL names the server (default: postgres on
127.0.0.1:5432). Takes about ten minutes on two cores.
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from databases import fresh_database

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
DATABASE = "messenger_bench_import"
START = datetime(2023, 1, 1, tzinfo=timezone.utc)
WORDS = ("please", "call", "back", "your", "order", "has", "shipped", "appointment",
         "tomorrow", "at", "the", "clinic", "reply", "STOP", "to", "opt", "out", "code")


def relaxed_date(value: datetime) -> dict:
    return {"$date": value.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


def canonical_date(value: datetime) -> dict:
    return {"$date": {"$numberLong": str(int(value.timestamp() * 1000))}}


def documents(count: int, canonical: bool):
    """Documents as the original service stored them: mongoengine leaves out unset fields,
    so optional ones come and go; most messages carry SMS data, a few email or API data."""
    rng = random.Random(42)
    date = canonical_date if canonical else relaxed_date
    number = (lambda n: {"$numberInt": str(n)}) if canonical else (lambda n: n)
    process = rng.randbytes(5).hex()
    for i in range(count):
        event_time = START + timedelta(milliseconds=i * 31_000 + rng.randrange(1000))
        ticket = rng.randrange(1, 200_000)
        document = {
            "_id": {"$oid": f"{int(event_time.timestamp()):08x}{process}{i & 0xFFFFFF:06x}"},
            "event_time": date(event_time),
            "communication_id": f"comm-{rng.randrange(1, 500_000)}",
            "msg_type": number(rng.choice((1, 1, 1, 2, 3))),
            "type": rng.choice(("outbound", "inbound")),
            "user_id": f"user-{rng.randrange(1, 5000)}",
            "module_id": number(rng.randrange(1, 40)),
            "ref_id": f"ticket-{ticket}",
            "ref_display_id": f"T-{ticket}",
            "is_system_gen": rng.random() < 0.3,
            "attachment_ids": [f"att-{rng.randrange(10**9)}"
                               for _ in range(rng.choice((0, 0, 1, 2, 3)))],
            "created_by": f"agent-{rng.randrange(1, 800)}",
            "organization": f"org-{rng.randrange(1, 60)}",
            "creation_time": date(event_time),
            "last_update_time": date(event_time + timedelta(seconds=rng.randrange(0, 86_400))),
            "is_deleted": rng.random() < 0.05,
            "is_assignee_read": rng.random() < 0.6,
            "message_read_map": [
                {"keys": f"user-{rng.randrange(1, 5000)}", "values": "read", "queryparam": False}
                for _ in range(rng.choice((0, 1, 1, 2, 3)))],
            "customer_id": f"cust-{rng.randrange(1, 100_000)}",
            "is_description": False,
            "sms_data": {"keys": f"+1555{rng.randrange(10**7):07d}",
                         "values": " ".join(rng.choices(WORDS, k=rng.randrange(5, 30))),
                         "queryparam": False},
        }
        if rng.random() < 0.3:
            document["received_config_id"] = f"rc-{rng.randrange(1, 50)}"
            document["customer_entity_id"] = f"ent-{rng.randrange(1, 100_000)}"
        if rng.random() < 0.1:
            document["email_data"] = {"keys": "to", "values": f"u{i}@example.com",
                                      "queryparam": False}
        if rng.random() < 0.05:
            document["api_data"] = {"keys": "endpoint", "values": f"/hooks/{i}",
                                    "queryparam": True}
        yield document


def write_dump(path: Path, count: int, canonical: bool) -> None:
    with path.open("wb") as file:
        for document in documents(count, canonical):
            file.write(orjson.dumps(document) + b"\n")


def timed(args: list[str], url: str, log: Path) -> tuple[float, int, int]:
    """Run a flask command; its wall time (s), peak RSS (MiB) and exit code."""
    env = {**os.environ, "DATABASE_URL": url}
    started = time.monotonic()
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", *args],
                                   cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - started
    return elapsed, usage.ru_maxrss // 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000",
                        help="comma-separated document counts (default: 100000,1000000)")
    parser.add_argument("--canonical", action="store_true",
                        help="Extended JSON canonical mode (mongoexport --jsonFormat=canonical)")
    parser.add_argument("--batch-size", default="1000")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="import_mongo_") as directory:
        for count in (int(size) for size in args.sizes.split(",")):
            dump, exported = Path(directory, "dump.json"), Path(directory, "export.json")
            started = time.monotonic()
            write_dump(dump, count, args.canonical)
            print(f"{count:,} documents written ({dump.stat().st_size / 2**20:,.0f} MiB) in "
                  f"{time.monotonic() - started:.0f} s", flush=True)
            url = fresh_database(SERVER, DATABASE)
            runs = (("import", ["import-mongo", str(dump), "--batch-size", args.batch_size]),
                    ("import again (all skipped)", ["import-mongo", str(dump)]),
                    ("export", ["export", str(exported)]))
            for label, command in runs:
                log = Path(directory, "stderr.log")
                elapsed, peak_mib, code = timed(command, url, log)
                last_line = log.read_text().strip().splitlines()[-1]
                print(f"  {label}: {elapsed:.1f} s, exit {code}; {last_line}", flush=True)
                if code != 0:
                    sys.exit(f"{label} failed:\n{log.read_text()[-3000:]}")
                rows.append((f"{count:,}", label, elapsed, count / elapsed, peak_mib))
            with exported.open("rb") as file:
                lines = sum(1 for _ in file)
            assert lines == count, f"exported {lines} of {count}"
            dump.unlink()
            exported.unlink()
    print(f"\n{'messages':>10}  {'run':<28}{'wall s':>8}{'docs/s':>10}{'peak RSS MiB':>14}")
    for size, label, elapsed, rate, peak in rows:
        print(f"{size:>10}  {label:<28}{elapsed:>8.1f}{rate:>10,.0f}{peak:>14}")


if __name__ == "__main__":
    main()
