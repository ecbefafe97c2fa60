"""Live updates at 1,000 subscribers, against the service as `make run` serves it:

    .venv/bin/python bench/live_updates.py [--subscribers 1000] [--seconds 15] [--rate 10]
                                           [--organizations 1]

gunicorn with gunicorn.conf.py (gevent workers) on a fresh PostgreSQL database
`bench_live`. Two phases of --seconds each, under the same steady write load (--rate POSTs
a second): REST requests alone (2 clients reading one message, one after the other), then
the same with --subscribers Server-Sent Events streams open. It reports the REST latency
(p50, p99) of both phases; the event latency, from each write's `event_time` (set before
its INSERT) to its arrival at each subscriber (p50, p99, max), and whether every
subscriber got every event; and the workers' memory (RSS) per subscriber. With
--organizations 1 (the default) every subscriber has an all-organizations key and gets
every event (rate x subscribers deliveries a second, the worst case); with N, subscribers
have the keys of N organizations in turn and the writes go to them in turn (each event
reaches subscribers/N of them). Loopback only, bounded in time and count; it stops what it
started.
"""
import argparse
import multiprocessing
import os
import re
import resource
import selectors
import signal
import socket
import statistics
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from databases import fresh_database  # noqa: E402
from slow_clients import serve  # noqa: E402

SMS = "/ux/common/messenger/sms/"
EVENTS = "/ux/common/messenger/sms/events/"
POSTGRES = os.environ.get("SCALE_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
EVENT_TIME = re.compile(rb'"event_time":"([^"]+)"')


def request(base: str, key: str, method: str, path: str, body: bytes | None = None) -> bytes:
    sent = urllib.request.Request(f"{base}{path}", data=body, method=method, headers={
        "Authorization": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(sent, timeout=30) as response:
        return response.read()


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=1000)[int(share * 1000) - 1] if len(values) > 1 \
        else (values or [float("nan")])[0]


def workers_rss_kib(master: int) -> int:
    """The resident memory of gunicorn's workers (the master's children), in KiB."""
    total = 0
    for child in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def organization_keys(url: str, organizations: int) -> list[str]:
    """A key of each organization `org-0` ... (one organization: an all-organizations key)."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from messenger_app.models import ApiKey

    made = [ApiKey.generate(None if organizations == 1 else f"org-{n}", "bench")
            for n in range(organizations)]
    engine = create_engine(url)
    with Session(engine) as session:
        session.add_all([key for key, _ in made])
        session.commit()
    engine.dispose()
    return [secret for _, secret in made]


class Writer(threading.Thread):
    """POSTs at a steady rate until stopped, to `organizations` in turn."""

    def __init__(self, base: str, key: str, rate: float, organizations: int) -> None:
        super().__init__(daemon=True)
        self.base, self.key, self.interval = base, key, 1 / rate
        self.organizations = organizations
        self.stopped = threading.Event()
        self.written = 0

    def run(self) -> None:
        due = time.monotonic()
        while not self.stopped.is_set():
            organization = f"org-{self.written % self.organizations}"
            body = b'{"organization": "%s"}' % organization.encode() if self.organizations > 1 \
                else b'{"ref_id": "bench"}'
            request(self.base, self.key, "POST", SMS, body)
            self.written += 1
            due += self.interval
            self.stopped.wait(max(0.0, due - time.monotonic()))


def rest_latencies(base: str, key: str, message_id: str, seconds: float) -> list[float]:
    """Two clients reading one message, one request after the other, for `seconds`."""
    found: list[float] = []
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            request(base, key, "GET", f"{SMS}{message_id}/")
            found.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


class Subscribers(multiprocessing.Process):
    """`count` streams, read by one selector in a process of their own (whose work then
    slows neither the REST clients' timing nor their GIL): each event's arrival time and
    event_time, read as they come and parsed at the end."""

    def __init__(self, base: str, keys: list[str], count: int) -> None:
        super().__init__(daemon=True)
        self.base, self.keys, self.count = base, keys, count
        self.ready, self.stop = multiprocessing.Event(), multiprocessing.Event()
        self.results: multiprocessing.Queue = multiprocessing.Queue()

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        port = int(self.base.rsplit(":", 1)[1])
        for n in range(self.count):
            stream = socket.create_connection(("127.0.0.1", port))
            stream.sendall(f"GET {EVENTS} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream"
                           f"\r\nAuthorization: {self.keys[n % len(self.keys)]}\r\n\r\n"
                           .encode())
            stream.setblocking(False)
            selector.register(stream, selectors.EVENT_READ, n)
        self.ready.set()
        arrivals: list[tuple[float, bytes]] = []
        received = [0] * self.count
        while not self.stop.is_set():
            for selected, _ in selector.select(timeout=0.2):
                data = selected.fileobj.recv(1 << 20)
                arrived = time.time()
                for written in EVENT_TIME.findall(data):
                    arrivals.append((arrived, written))
                    received[selected.data] += 1
        latencies = [arrived - datetime.fromisoformat(written.decode().replace("Z", "+00:00"))
                     .timestamp() for arrived, written in arrivals]
        self.results.put((latencies, received))


def report(name: str, values: list[float], unit: float = 1000) -> str:
    return (f"{name}: n={len(values)} p50={percentile(values, 0.5) * unit:.1f} ms "
            f"p99={percentile(values, 0.99) * unit:.1f} ms max={max(values) * unit:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=10, help="writes a second")
    parser.add_argument("--organizations", type=int, default=1)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.subscribers)),
                                                hard))
    url = fresh_database(POSTGRES, "bench_live")
    keys = organization_keys(url, args.organizations)
    server, base, key = serve(url)
    try:
        message_id = request(base, key, "POST", SMS, b"{}").split(b'"id":"')[1][:24].decode()
        time.sleep(1)
        writer = Writer(base, key, args.rate, args.organizations)
        writer.start()
        alone = rest_latencies(base, key, message_id, args.seconds)
        idle_rss = workers_rss_kib(server.pid)
        subscribers = Subscribers(base, keys, args.subscribers)
        subscribers.start()
        subscribers.ready.wait(60)
        time.sleep(3)  # every stream's headers read, and waiting
        written_before = writer.written
        beside = rest_latencies(base, key, message_id, args.seconds)
        written = writer.written - written_before
        subscribed_rss = workers_rss_kib(server.pid)
        writer.stopped.set()
        writer.join()
        time.sleep(1)  # the last events arrive
        subscribers.stop.set()
        latencies, received = subscribers.results.get(timeout=120)
        subscribers.join()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    print(f"{args.subscribers} subscribers of {args.organizations} organization(s), "
          f"{args.rate:g} writes/s, {args.seconds:g} s a phase ({os.cpu_count()} cores)")
    print(report("REST GET one, no subscribers", alone))
    print(report(f"REST GET one, {args.subscribers} subscribers", beside))
    print(report("event latency, event_time to subscriber", latencies))
    complete = sum(1 for count in received if count >= written // args.organizations)
    print(f"events: {written} written while all subscribed; {complete} of {args.subscribers} "
          f"subscribers got at least their share ({sum(received)} events delivered)")
    print(f"workers' RSS: {idle_rss / 1024:.1f} MiB without subscribers, "
          f"{subscribed_rss / 1024:.1f} MiB with: "
          f"{(subscribed_rss - idle_rss) / args.subscribers:.1f} KiB a subscriber")


if __name__ == "__main__":
    main()
