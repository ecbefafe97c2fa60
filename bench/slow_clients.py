"""Slow clients against the service as `make run` and the production recipe serve it:

    .venv/bin/python bench/slow_clients.py [--slow 200] [--seconds 20]

gunicorn with gunicorn.conf.py (gevent workers) on the embedded SQLite database, then on
PostgreSQL. For each: normal clients (4 threads: GET one, a list page, POST) for
--seconds, first alone, then while --slow sockets each send a request's headers a byte a
second and never finish. It reports the normal requests' latency (p50, p99, max) and any
that failed or took over 5 s, in both phases.
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from databases import fresh_database  # noqa: E402

SMS = "/ux/common/messenger/sms/"
POSTGRES = os.environ.get("SCALE_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(url: str) -> tuple[subprocess.Popen, str, str]:
    """gunicorn on `url` (migrated already), a free port and a new key: (process, base, key)."""
    env = {**os.environ, "DATABASE_URL": url, "LOG_REQUESTS": "false"}
    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    key = subprocess.run([*flask, "api-key", "create", "--all-organizations", "--name", "slow"],
                         cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True).stdout.split()[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                               "wsgi:app"], cwd=ROOT, env={**env, "PORT": str(port)},
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            return server, base, key
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not start")


def call(base: str, key: str, method: str, path: str, body: bytes | None = None) -> None:
    request = urllib.request.Request(f"{base}{path}", data=body, method=method, headers={
        "Authorization": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def normal_load(base: str, key: str, seconds: float) -> tuple[list[float], int]:
    """4 threads of GET one, GET a page, POST for `seconds`: latencies, and failures."""
    call(base, key, "POST", SMS, b'{"ref_id": "seed"}')
    with urllib.request.urlopen(urllib.request.Request(
            f"{base}{SMS}?page_size=1", headers={"Authorization": key})) as response:
        one = response.read().decode().split('"id":"')[1][:24]
    work = [("GET", f"{SMS}{one}/", None), ("GET", f"{SMS}?page_size=20", None),
            ("POST", SMS, b'{"ref_id": "load"}')]
    latencies, failures, deadline = [], [0], time.monotonic() + seconds

    def client(n: int) -> None:
        while time.monotonic() < deadline:
            method, path, body = work[n % len(work)]
            n += 1
            started = time.perf_counter()
            try:
                call(base, key, method, path, body)
                latencies.append(time.perf_counter() - started)
            except OSError:
                failures[0] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures[0]


def with_slow_sockets(base: str, count: int, stop: threading.Event) -> None:
    host, port = base.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        sockets.append(sock)
    while not stop.wait(1):
        for sock in sockets:
            try:
                sock.sendall(b"X")
            except OSError:
                pass
    for sock in sockets:
        sock.close()


def report(label: str, latencies: list[float], failures: int) -> None:
    ms = sorted(1000 * latency for latency in latencies)
    p99 = ms[int(len(ms) * 0.99)]
    print(f"| {label} | {len(ms)} | {failures} | {statistics.median(ms):.1f} | {p99:.1f} "
          f"| {ms[-1]:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    databases = {"make run (SQLite)": f"sqlite:///{tempfile.mkdtemp()}/messenger.db",
                 "production (PostgreSQL)": fresh_database(POSTGRES, "messenger_bench_slow")}
    print("| served as | phase | requests | failed | p50 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for served_as, url in databases.items():
        server, base, key = serve(url)
        try:
            report(f"{served_as} | alone", *normal_load(base, key, args.seconds))
            stop = threading.Event()
            slow = threading.Thread(target=with_slow_sockets, args=(base, args.slow, stop))
            slow.start()
            time.sleep(2)  # every slow socket connected and sending
            report(f"{served_as} | with {args.slow} slow sockets",
                   *normal_load(base, key, args.seconds))
            stop.set()
            slow.join()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
