"""The ten queries of docs/reporting.md at 1,000,000 messages on PostgreSQL: time and plan.

    .venv/bin/python bench/reporting.py            # seeds messenger_scale_1m once (as scale.py)
    .venv/bin/python bench/reporting.py --explain  # and prints each query's EXPLAIN ANALYZE

The database is bench/scale.py's (20 organizations, a message a minute for ~694 days up to
the seeding); it is migrated to head first. The queries run as documented, with the
organization `acme` replaced by one of the seeded ones and October 2026 kept. Each is run
five times after a warm-up; the table gives the median and the rows returned.
"""
import argparse
import re
import statistics
import time

from sqlalchemy import create_engine, text

from scale import ROOT, seed

ORGANIZATION = "org-7"


def documented_queries() -> list[tuple[str, str]]:
    """(title, SQL) of each numbered query in docs/reporting.md."""
    document = (ROOT / "docs" / "reporting.md").read_text()
    return re.findall(r"^### (\d+\..*?)\n.*?```sql\n(.*?)```", document, flags=re.S | re.M)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    url = seed("1m", 1_000_000, reseed=False)
    engine = create_engine(url)
    print("| query | rows | median ms |\n|---|---:|---:|")
    plans = []
    with engine.connect() as connection:
        for title, sql in documented_queries():
            sql = sql.replace("'acme'", f"'{ORGANIZATION}'")
            times, rows = [], 0
            for i in range(6):
                started = time.perf_counter()
                rows = len(connection.execute(text(sql)).all())
                if i:
                    times.append((time.perf_counter() - started) * 1000)
            print(f"| {title} | {rows} | {statistics.median(times):.1f} |", flush=True)
            if args.explain:
                plan = connection.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")).scalars()
                plans.append(f"-- {title}\n{sql}\n" + "\n".join(plan))
    engine.dispose()
    print("\n\n".join(plans))


if __name__ == "__main__":
    main()
