"""What one list request of large messages costs a worker in memory:

    .venv/bin/python bench/list_memory.py [--messages 300] [--kib 1000]

Seeds --messages messages of about --kib KiB each (attachment ids of 100,000 characters) into a
fresh PostgreSQL database, serves it with gunicorn (gunicorn.conf.py, one worker), asks
for all of them in one page, and reports the response's size and the worker's resident
memory before and at its peak (VmHWM).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from databases import fresh_database  # noqa: E402
from slow_clients import free_port  # noqa: E402

SMS = "/ux/common/messenger/sms/"
POSTGRES = os.environ.get("SCALE_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")


def memory_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith(field)).split()[1])


def wait_until_serving(base: str) -> None:
    """Until `base` answers /healthz (with any status: the shared bench's floor has none)."""
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--kib", type=int, default=1000)
    args = parser.parse_args()
    url = fresh_database(POSTGRES, "messenger_bench_list_memory")
    env = {**os.environ, "DATABASE_URL": url, "LOG_REQUESTS": "false", "WEB_CONCURRENCY": "1",
           "METRICS": "false"}
    key = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "api-key", "create",
                          "--all-organizations", "--name", "memory"], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True).stdout.split()[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                               "wsgi:app"], cwd=ROOT, env={**env, "PORT": str(port)},
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base)
        strings = args.kib * 1024 // 100_500  # of 100,000 characters, the longest a string is
        body = json.dumps({"attachment_ids": ["a" * 100_000] * strings}).encode()
        for _ in range(args.messages):
            urllib.request.urlopen(urllib.request.Request(f"{base}{SMS}", data=body, headers={
                "Authorization": key, "Content-Type": "application/json"}))
        worker = int(Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()[0])
        Path(f"/proc/{worker}/clear_refs").write_text("5")  # the peak is counted from now
        before = memory_kib(worker, "VmRSS")
        with urllib.request.urlopen(urllib.request.Request(
                f"{base}{SMS}?page_size={args.messages}", headers={"Authorization": key})) as page:
            size = sum(len(piece) for piece in iter(lambda: page.read(1 << 20), b""))
        peak = memory_kib(worker, "VmHWM")
        print(f"| {args.messages} messages of {args.kib} KiB | response {size / 2**20:.0f} MiB "
              f"| worker before {before / 1024:.0f} MiB | peak {peak / 1024:.0f} MiB "
              f"| peak - before {(peak - before) / 1024:.0f} MiB |")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
