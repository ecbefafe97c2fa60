"""Lists at 10,000 and at 1,000,000 messages on PostgreSQL: the same requests, timed on both.

    .venv/bin/python bench/scale.py            # seeds messenger_scale_10k and _1m once, measures
    .venv/bin/python bench/scale.py --reseed   # seeds them anew first

Seeding is bulk SQL (bench/seed_scale.sql through psql), not the API; it takes a few minutes
for the 1,000,000. Each request runs in-process through the Flask test client (the app and
its SQL, no HTTP), alternating between the two databases; the table gives median times and
their ratio. SCALE_SERVER_URL names the server (default: postgres on 127.0.0.1:5432).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from messenger_app import create_app  # noqa: E402
from messenger_app.db import db  # noqa: E402
from messenger_app.models import ApiKey  # noqa: E402
from messenger_app.messages import encode_cursor  # noqa: E402

from databases import fresh_database, migrated  # noqa: E402

SERVER = os.environ.get("SCALE_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
SIZES = {"10k": 10_000, "1m": 1_000_000}
SMS = "/ux/common/messenger/sms/"


def seed(name: str, count: int, reseed: bool) -> str:
    """The database messenger_scale_<name> with `count` messages, seeded unless it exists
    (or `reseed`); it is migrated to head either way."""
    database = f"messenger_scale_{name}"
    server = create_engine(f"{SERVER}/postgres")
    with server.connect() as connection:
        exists = connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                   {"name": database})
    server.dispose()
    if exists and not reseed:
        return migrated(f"{SERVER}/{database}")
    started = time.monotonic()
    url = fresh_database(SERVER, database)
    libpq_url = url.replace("postgresql+psycopg", "postgresql")
    subprocess.run(["psql", "-q", "-v", f"n={count}", "-f", str(ROOT / "bench/seed_scale.sql"),
                    libpq_url], check=True)
    print(f"seeded {count:,} messages into {database} "
          f"in {time.monotonic() - started:.0f} s", flush=True)
    return url


def requests_for(app) -> dict[str, tuple[dict, str]]:
    """The requests to time: (headers, path) by label, for this database's data."""
    with app.app_context():
        keys = {}
        for label, organization in (("org key", "org-3"), ("all-orgs key", None)):
            key, secret = ApiKey.generate(organization, "scale bench")
            db.session.add(key)
            keys[label] = {"Authorization": secret}
        db.session.commit()
        newest = db.session.scalar(text("SELECT max(creation_time) FROM messages"))
        in_scope = "WHERE :all OR organization = 'org-3'"
        counts, near_end = {}, {}
        for label in keys:
            scope = {"all": label == "all-orgs key"}
            counts[label] = db.session.scalar(text(f"SELECT count(*) FROM messages {in_scope}"),
                                              scope)
            near_end[label] = db.session.scalar(text(
                f"SELECT id FROM messages {in_scope} ORDER BY id DESC LIMIT 1 OFFSET 200"), scope)
    start = (newest - timedelta(days=3)).strftime("%Y-%m-%dT00:00:00Z")
    end = (newest - timedelta(days=2)).strftime("%Y-%m-%dT00:00:00Z")
    out = {}
    for label, headers in keys.items():
        paths = {
            "default list (creation order), first page": "",
            "default list, last page": f"page={-(-counts[label] // 100)}",
            "newest first (ordering=-id), first page": "ordering=-id",
            "ref_id filter": "ref_id=ref-123",
            "customer filter": "customer_id=cust-3",
            "one day's range": f"creation_time__gte={start}&creation_time__lt={end}",
            "cursor page near the end": f"cursor={encode_cursor(near_end[label])}",
        }
        for what, query in paths.items():
            out[f"{what}, {label}"] = (headers, f"{SMS}?{query}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()

    apps = {name: create_app({"DATABASE_URL": seed(name, count, args.reseed),
                              "LOG_REQUESTS": False})
            for name, count in SIZES.items()}
    clients = {name: app.test_client() for name, app in apps.items()}
    requests = {name: requests_for(app) for name, app in apps.items()}
    times = {name: {label: [] for label in requests[name]} for name in apps}
    rows = {}
    for label in requests["10k"]:
        for i in range(args.repeat + 10):
            for name in (("10k", "1m") if i % 2 else ("1m", "10k")):
                headers, path = requests[name][label]
                started = time.perf_counter()
                response = clients[name].get(path, headers=headers)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.get_json()
                if i >= 10:
                    times[name][label].append(elapsed * 1000)
                rows.setdefault((label, name), len(response.get_json()))
    print("| request | rows | 10,000: median ms | 1,000,000: median ms | ratio |")
    print("|---|---:|---:|---:|---:|")
    for label in requests["10k"]:
        small = statistics.median(times["10k"][label])
        large = statistics.median(times["1m"][label])
        print(f"| {label} | {rows[(label, '10k')]} / {rows[(label, '1m')]} | {small:.2f} "
              f"| {large:.2f} | {large / small:.2f} |")


if __name__ == "__main__":
    main()
