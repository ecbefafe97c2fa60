"""Lists at 10,000 messages and at 10,000,000 (or 1,000,000) on PostgreSQL: the same
requests, timed on both.

    .venv/bin/python bench/scale.py                    # 10k against 10m (12 monthly partitions)
    .venv/bin/python bench/scale.py --sizes 10k,1m     # 10k against 1m
    .venv/bin/python bench/scale.py --reseed           # seeds them anew first

Each size's database, messenger_scale_<size>, is seeded once (bulk SQL through psql:
bench/seed_scale.sql, not the API) into the monthly partitions it needs (made first, as
`flask partitions --since` makes them); 10,000,000 takes about five minutes. 10k and 1m hold
a message a minute, 10m one every 3 s (347 days: twelve monthly partitions and a part).
Each request runs in-process through the Flask test client (the app and its SQL, no HTTP),
alternating between the two databases; the table gives median times and their ratio.
SCALE_SERVER_URL names the server (default: postgres on 127.0.0.1:5432).
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from messenger_app import create_app  # noqa: E402
from messenger_app.db import db, make_engine  # noqa: E402
from messenger_app.models import ApiKey  # noqa: E402
from messenger_app.messages import encode_cursor  # noqa: E402
from messenger_app.partitions import ensure_partitions  # noqa: E402

from databases import fresh_database, migrated  # noqa: E402

SERVER = os.environ.get("SCALE_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
SIZES = {"10k": 10_000, "1m": 1_000_000, "10m": 10_000_000}
STEP_SECONDS = {"10k": 60, "1m": 60, "10m": 3}  # between two messages' creation times
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
    now = datetime.now(UTC)
    engine = make_engine(url)
    ensure_partitions(engine, now.date(),
                      since=(now - timedelta(seconds=count * STEP_SECONDS[name])).date())
    engine.dispose()
    libpq_url = url.replace("postgresql+psycopg", "postgresql")
    subprocess.run(["psql", "-q", "-v", f"n={count}", "-v", f"step={STEP_SECONDS[name]}",
                    "-f", str(ROOT / "bench/seed_scale.sql"), libpq_url], check=True)
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
            "GET one (the newest but 200)": f"{near_end[label]}/",
            "default list (creation order), first page": "",
            "default list, last page": f"page={-(-counts[label] // 100)}",
            "newest first (ordering=-id), first page": "ordering=-id",
            "ref_id filter": "ref_id=ref-123",
            "customer filter": "customer_id=cust-3",
            "one day's range": f"creation_time__gte={start}&creation_time__lt={end}",
            "cursor page near the end": f"cursor={encode_cursor(near_end[label])}",
        }
        for what, query in paths.items():
            out[f"{what}, {label}"] = (headers, SMS + (query if query.endswith("/")
                                                       else f"?{query}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,10m", help="the two sizes to compare")
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()
    small_size, large_size = args.sizes.split(",")

    apps = {name: create_app({"DATABASE_URL": seed(name, SIZES[name], args.reseed),
                              "LOG_REQUESTS": False})
            for name in (small_size, large_size)}
    clients = {name: app.test_client() for name, app in apps.items()}
    requests = {name: requests_for(app) for name, app in apps.items()}
    times = {name: {label: [] for label in requests[name]} for name in apps}
    rows = {}
    for label in requests[small_size]:
        for i in range(args.repeat + 10):
            for name in ((small_size, large_size) if i % 2 else (large_size, small_size)):
                headers, path = requests[name][label]
                started = time.perf_counter()
                response = clients[name].get(path, headers=headers)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.get_json()
                if i >= 10:
                    times[name][label].append(elapsed * 1000)
                body = response.get_json()
                rows.setdefault((label, name), len(body) if isinstance(body, list) else 1)
    small, large = (f"{SIZES[name]:,}" for name in (small_size, large_size))
    print(f"| request | rows | {small}: median ms | {large}: median ms | ratio |")
    print("|---|---:|---:|---:|---:|")
    for label in requests[small_size]:
        small_ms = statistics.median(times[small_size][label])
        large_ms = statistics.median(times[large_size][label])
        print(f"| {label} | {rows[(label, small_size)]} / {rows[(label, large_size)]} "
              f"| {small_ms:.2f} | {large_ms:.2f} | {large_ms / small_ms:.2f} |")


if __name__ == "__main__":
    main()
