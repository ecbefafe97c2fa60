"""Read replicas under load: what share of the reads a streaming replica takes, what the
consistency token buys, what a replica stopped under load costs, and what routing costs.

    .venv/bin/python bench/replicas.py [--duration 10]

On PostgreSQL servers it makes and removes itself (tests/clusters.py: a primary and its
streaming replicas, on free loopback ports, never the machine's own 127.0.0.1:5432), with
a database `bench_replicas` and gunicorn as in production (gunicorn.conf.py, 3 gevent
workers), it measures:

1. Mixed load (80% GET one, 10% a list page, 10% POST; 16 client threads, keep-alive) for
   --duration s: requests/s, errors, p50/p99, and the reads the primary and the replica
   served (/metrics).
2. Read your writes, on a replica that applies each commit 1 s late (max lag 3600 s, so it
   is `ok`): 200 times, POST a message and read it at once with its Consistency-Token and
   without one (a fresh connection, no cookie): 200s, stale 404s, and where each ran.
3. The replica stopped (immediate) at a third of the same mixed load: errors, p99, how
   long until /readyz says `down`, and, started again, until it says `ok`.
4. Read-only load (GET one) on two gunicorns on the same primary, with and without the
   replica configured, interleaved A B A B: requests/s and their ratio.

It prints Markdown tables and writes the figures to build/bench-replicas.json. Each
process checks its replicas itself (every 0.5 s), and /readyz answers from whichever
worker takes the request: the times to `down` and `ok` are the first answer that says so.
"""
import argparse
import contextlib
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # tests/helpers.py imports messenger_app

from clusters import PostgresServer, postgres_bin, scratch_directory, wait_for  # noqa: E402
from databases import migrated  # noqa: E402
from helpers import free_port  # noqa: E402

DATABASE = "bench_replicas"
SMS = "/ux/common/messenger/sms/"
THREADS = 16
WORKERS = 3
SEEDED = 200
READ_YOUR_WRITES = 200
MIXED = {"one": 80, "list": 10, "create": 10}
GET_ONE = {"one": 100}
OUTPUT = ROOT / "build" / "bench-replicas.json"


# --- HTTP -------------------------------------------------------------------------------

class Client:
    """One keep-alive connection to the service, as one API key; a new one after an error."""

    def __init__(self, port: int, key: str | None = None) -> None:
        self.port = port
        self.headers = {"Authorization": f"Token {key}"} if key else {}
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None,
                headers: dict | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {**self.headers, **(headers or {})}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.connection.request(method, path, None if body is None else json.dumps(body),
                                    headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, response, data

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def once(port: int, path: str, key: str | None = None, headers: dict | None = None):
    """One request on a connection of its own: (status, body)."""
    client = Client(port, key)
    try:
        status, _, data = client.request("GET", path, headers=headers)
        return status, data
    finally:
        client.close()


def replica_state(port: int) -> str | None:
    """The (only) replica's state in /readyz, as the worker that answers sees it."""
    try:
        _, data = once(port, "/readyz")
        return json.loads(data)["replicas"][0]["state"]
    except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError):
        return None


def seconds_until(port: int, state: str, timeout: float = 60) -> float:
    started = time.monotonic()
    wait_for(lambda: replica_state(port) == state, timeout,
             f"/readyz showing the replica {state}", interval=0.05)
    return time.monotonic() - started


READS = re.compile(r'^messenger_db_reads_total\{target="([^"]+)"\} (\S+)$', re.MULTILINE)


def reads(port: int) -> Counter:
    """Reads served so far, summed over the workers: {"primary": n, "replica": n}."""
    _, data = once(port, "/metrics")
    counts = Counter()
    for target, value in READS.findall(data.decode()):
        counts["primary" if target == "primary" else "replica"] += int(float(value))
    return counts


def read_split(before: Counter, after: Counter) -> dict:
    primary, replica = after["primary"] - before["primary"], after["replica"] - before["replica"]
    share = 100 * replica / (primary + replica) if primary + replica else 0.0
    return {"reads_primary": primary, "reads_replica": replica, "replica_share_pct": share}


# --- Servers ----------------------------------------------------------------------------

def make_primary(stack: contextlib.ExitStack, root: Path) -> tuple[PostgresServer, str]:
    """A started primary with the database migrated, and an all-organizations API key."""
    primary = stack.enter_context(PostgresServer.primary(root / "primary"))
    primary.start()
    primary.execute(f"CREATE DATABASE {DATABASE}")
    url = migrated(primary.url(DATABASE))
    key = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "api-key", "create",
         "--all-organizations", "--name", "bench"], cwd=ROOT, check=True, capture_output=True,
        text=True, env={**os.environ, "DATABASE_URL": url}).stdout.strip().splitlines()[-1]
    return primary, key


@contextlib.contextmanager
def service(logs: Path, name: str, primary: PostgresServer, replicas=(), **settings):
    """gunicorn (gunicorn.conf.py) on the primary and `replicas`, started; its port."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": primary.url(DATABASE),
           "DATABASE_REPLICA_URLS": ",".join(replica.url(DATABASE) for replica in replicas),
           "WEB_CONCURRENCY": str(WORKERS), "HOST": "127.0.0.1", "PORT": str(port),
           "LOG_REQUESTS": "false", **{k: str(v) for k, v in settings.items()}}
    log_path = logs / f"gunicorn-{name}.log"
    with log_path.open("w") as log:
        # A session of its own: a Ctrl-C reaches this script, which then stops gunicorn.
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                    "wsgi:app"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            try:
                wait_for(lambda: answers(process, port), 60, f"gunicorn {name} starting")
            except (TimeoutError, RuntimeError):
                sys.stderr.write(log_path.read_text()[-3000:])
                raise
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def answers(process: subprocess.Popen, port: int) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"gunicorn exited {process.returncode}")
    try:
        return once(port, "/healthz")[0] == 200
    except (OSError, http.client.HTTPException):
        return False


def warm(port: int, key: str, ids: list[str]) -> None:
    """A second of GET one from every thread, so that every worker has started checking its
    replicas (each starts at its first read) before anything is measured; then wait until
    /readyz says the replica is `ok`."""
    run_load(port, key, ids, GET_ONE, 1)
    seconds_until(port, "ok")


def seed(port: int, key: str, count: int) -> list[str]:
    client = Client(port, key)
    ids = [json.loads(client.request("POST", SMS, {"ref_id": f"seed-{n}"})[2])["id"]
           for n in range(count)]
    client.close()
    return ids


# --- Load -------------------------------------------------------------------------------

class Load:
    """THREADS client threads, each on its own keep-alive connection, sending requests of
    `mix` ({"one": weight, "list": weight, "create": weight}) for `seconds`."""

    def __init__(self, port: int, key: str, ids: list[str], mix: dict, seconds: float) -> None:
        self.port, self.key, self.ids, self.seconds = port, key, ids, seconds
        self.kinds, self.weights = list(mix), list(mix.values())
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: Counter = Counter()
        self.errors = 0
        self.threads = [threading.Thread(target=self.client, args=(seed,), daemon=True)
                        for seed in range(THREADS)]

    def start(self) -> "Load":
        self.started = time.monotonic()
        self.deadline = self.started + self.seconds
        for thread in self.threads:
            thread.start()
        return self

    def request(self, rng: random.Random) -> tuple[str, str, dict | None]:
        kind = rng.choices(self.kinds, self.weights)[0]
        if kind == "one":
            return "GET", f"{SMS}{rng.choice(self.ids)}/", None
        if kind == "list":
            return "GET", f"{SMS}?page_size=20&page={rng.randint(1, 5)}", None
        return "POST", SMS, {"ref_id": "load"}

    def client(self, seed: int) -> None:
        rng, client = random.Random(seed), Client(self.port, self.key)
        latencies, statuses, errors = [], Counter(), 0
        while time.monotonic() < self.deadline:
            method, path, body = self.request(rng)
            started = time.perf_counter()
            try:
                status = client.request(method, path, body)[0]
            except (OSError, http.client.HTTPException):
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
        client.close()
        with self.lock:
            self.latencies += latencies
            self.statuses += statuses
            self.errors += errors

    def finish(self) -> dict:
        for thread in self.threads:
            thread.join()
        elapsed = time.monotonic() - self.started
        ms = sorted(1000 * latency for latency in self.latencies)
        return {"requests": len(ms), "rps": len(ms) / elapsed,
                "non_2xx": {str(status): n for status, n in sorted(self.statuses.items())
                            if not 200 <= status < 300},
                "connection_errors": self.errors,
                "p50_ms": statistics.median(ms) if ms else None,
                "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else None}


def run_load(port: int, key: str, ids: list[str], mix: dict, seconds: float) -> dict:
    return Load(port, key, ids, mix, seconds).start().finish()


# --- The parts --------------------------------------------------------------------------

def mixed_load_share(port: int, key: str, ids: list[str], seconds: float) -> dict:
    before = reads(port)
    result = run_load(port, key, ids, MIXED, seconds)
    return {**result, **read_split(before, reads(port))}


def read_your_writes(port: int, key: str, delayed: PostgresServer) -> dict:
    """POST, then at once GET it (a) with its token and (b) without; /metrics scraped after
    each GET, so that each read's target is known."""
    # Until a replica has replayed a transaction since it started, the service takes it to
    # be far behind at the next write (it has no replay time yet): one replayed first.
    ids = seed(port, key, 1)
    delayed.wait_until_caught_up()
    warm(port, key, ids)
    writer = Client(port, key)
    token_statuses, plain_statuses = Counter(), Counter()
    token_reads, plain_reads, gaps = Counter(), Counter(), []
    last = reads(port)
    for n in range(READ_YOUR_WRITES):
        _, response, data = writer.request("POST", SMS, {"ref_id": f"ryw-{n}"})
        written = time.perf_counter()
        token = response.getheader("Consistency-Token")
        path = f"{SMS}{json.loads(data)['id']}/"
        token_statuses[writer.request("GET", path, headers={"Consistency-Token": token})[0]] += 1
        now = reads(port)
        token_reads, last = token_reads + (now - last), now
        plain_statuses[once(port, path, key)[0]] += 1  # a fresh connection: no cookie
        gaps.append(time.perf_counter() - written)
        now = reads(port)
        plain_reads, last = plain_reads + (now - last), now
    writer.close()
    return {"n": READ_YOUR_WRITES,
            "with_token_200": token_statuses[200], "with_token_statuses": dict(token_statuses),
            "with_token_reads": read_split(Counter(), token_reads),
            "without_token_404": plain_statuses[404],
            "without_token_statuses": dict(plain_statuses),
            "without_token_reads": read_split(Counter(), plain_reads),
            "without_token_median_ms_after_post": 1000 * statistics.median(gaps)}


def stopped_replica(port: int, key: str, ids: list[str], replica: PostgresServer,
                    seconds: float) -> dict:
    before = reads(port)
    load = Load(port, key, ids, MIXED, seconds).start()
    time.sleep(seconds / 3)
    issued = time.monotonic()
    replica.stop(mode="immediate")
    stop_seconds = time.monotonic() - issued
    down_after = seconds_until(port, "down", timeout=30) + stop_seconds
    result = load.finish()
    split = read_split(before, reads(port))
    issued = time.monotonic()
    replica.start()
    start_seconds = time.monotonic() - issued
    ok_after = seconds_until(port, "ok")
    return {**result, **split, "pg_ctl_stop_s": stop_seconds, "down_after_stop_s": down_after,
            "pg_ctl_start_s": start_seconds, "ok_after_started_s": ok_after}


def throughput(with_port: int, without_port: int, key: str, ids: list[str],
               seconds: float) -> dict:
    warm(with_port, key, ids)
    run_load(without_port, key, ids, GET_ONE, 1)  # warm as well
    runs = []
    for replica, port in [("with", with_port), ("without", without_port)] * 2:
        before = reads(port)
        result = run_load(port, key, ids, GET_ONE, seconds)
        runs.append({"replica": replica, **result, **read_split(before, reads(port))})
    mean = {label: statistics.mean(run["rps"] for run in runs if run["replica"] == label)
            for label in ("with", "without")}
    return {"runs": runs, "rps_with": mean["with"], "rps_without": mean["without"],
            "ratio_with_without": mean["with"] / mean["without"]}


# --- Report -----------------------------------------------------------------------------

def row(*cells) -> None:
    print("| " + " | ".join(cell if isinstance(cell, str) else fmt(cell) for cell in cells)
          + " |", flush=True)


def fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def load_table(first: str, results: list[tuple[str, dict]]) -> None:
    row(first, "requests", "req/s", "non-2xx", "conn. errors", "p50 ms", "p99 ms",
        "reads primary", "reads replica", "replica share %")
    row(*["---"] + ["---:"] * 9)
    for label, r in results:
        row(label, r["requests"], r["rps"], json.dumps(r["non_2xx"]) if r["non_2xx"] else 0,
            r["connection_errors"], r["p50_ms"], r["p99_ms"], r["reads_primary"],
            r["reads_replica"], r["replica_share_pct"])


def report_read_your_writes(r: dict) -> None:
    token, plain = r["with_token_reads"], r["without_token_reads"]
    print(f"- with the token: {r['with_token_200']}/{r['n']} were 200 "
          f"(statuses {r['with_token_statuses']}); served by the replica "
          f"{token['reads_replica']}, by the primary {token['reads_primary']}")
    print(f"- without a token: {r['without_token_404']}/{r['n']} were 404, stale "
          f"(statuses {r['without_token_statuses']}); served by the replica "
          f"{plain['reads_replica']}, by the primary {plain['reads_primary']}; sent a median "
          f"{r['without_token_median_ms_after_post']:.0f} ms after the POST's answer", flush=True)


def report_stopped(r: dict) -> None:
    print(f"- /readyz showed the replica `down` {r['down_after_stop_s']:.2f} s after the stop "
          f"was issued (pg_ctl stop -m immediate took {r['pg_ctl_stop_s']:.2f} s)")
    print(f"- started again (pg_ctl start took {r['pg_ctl_start_s']:.2f} s): /readyz showed "
          f"`ok` {r['ok_after_started_s']:.2f} s after it accepted connections", flush=True)


def report_throughput(r: dict) -> None:
    row("run", "replica configured", "requests", "req/s", "p50 ms", "p99 ms",
        "replica share %", "errors")
    row("---:", "---", "---:", "---:", "---:", "---:", "---:", "---:")
    for n, run in enumerate(r["runs"], 1):
        errors = sum(run["non_2xx"].values()) + run["connection_errors"]
        row(n, run["replica"], run["requests"], run["rps"], run["p50_ms"], run["p99_ms"],
            run["replica_share_pct"], errors)
    print(f"\nwith a replica {r['rps_with']:.0f} req/s, without {r['rps_without']:.0f} req/s: "
          f"ratio {r['ratio_with_without']:.2f}", flush=True)


# --- Main -------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10,
                        help="seconds of each load run (default 10)")
    args = parser.parse_args()
    if postgres_bin() is None:
        raise SystemExit("PostgreSQL is not installed (/usr/lib/postgresql/*/bin)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    figures = {"setup": {"duration_s": args.duration, "client_threads": THREADS,
                         "gunicorn_workers": WORKERS, "cpus": os.cpu_count(),
                         "postgres": postgres_bin().parent.name}}
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(scratch_directory("bench-replicas-"))
        primary, key = make_primary(stack, root)
        replica = stack.enter_context(primary.replica(root / "replica"))
        print(f"# Read replicas: PostgreSQL {figures['setup']['postgres']}, {os.cpu_count()} "
              f"CPUs, gunicorn {WORKERS} gevent workers, {THREADS} client threads, "
              f"{args.duration:g} s a load run\n", flush=True)

        with_replica = stack.enter_context(service(root, "replica", primary, [replica]))
        seconds_until(with_replica, "ok")
        ids = seed(with_replica, key, SEEDED)
        replica.wait_until_caught_up()
        warm(with_replica, key, ids)
        print("## 1. Mixed load (80% GET one, 10% list, 10% POST)\n")
        figures["mixed_load"] = mixed_load_share(with_replica, key, ids, args.duration)
        load_table("load", [("mixed", figures["mixed_load"])])

        print("\n## 2. Read your writes (a replica 1 s behind, max lag 3600 s)\n")
        with primary.replica(root / "delayed", apply_delay="1s") as delayed, \
                service(root, "delayed", primary, [delayed],
                        DATABASE_REPLICA_MAX_LAG_SECONDS=3600) as port:
            figures["read_your_writes"] = read_your_writes(port, key, delayed)
        report_read_your_writes(figures["read_your_writes"])

        print(f"\n## 3. The replica stopped (immediate) at {args.duration / 3:.1f} s of the "
              "mixed load\n")
        warm(with_replica, key, ids)
        figures["stopped_replica"] = stopped_replica(with_replica, key, ids, replica,
                                                     args.duration)
        load_table("load", [("replica stopped", figures["stopped_replica"])])
        print()
        report_stopped(figures["stopped_replica"])

        print("\n## 4. GET one only, with and without a replica (same primary)\n")
        without_replica = stack.enter_context(service(root, "primary-only", primary))
        figures["throughput"] = throughput(with_replica, without_replica, key, ids,
                                           args.duration)
        report_throughput(figures["throughput"])
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\nfigures: {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: servers stopped and removed")
