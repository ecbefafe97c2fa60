"""Load with faults: concurrent clients against gunicorn on PostgreSQL, a SIGTERM in the
middle, then a check that nothing acknowledged was lost and nothing was half-applied.

    .venv/bin/python bench/load.py                  # 50 clients, 30 s
    .venv/bin/python bench/load.py --clients 80 --seconds 60

It recreates the database `messenger_load` (127.0.0.1:5432, LOAD_SERVER_URL to change),
migrates it, starts gunicorn (loopback only) and runs the clients: each creates, reads,
lists, patches and deletes its own messages. Halfway through, the server gets SIGTERM
(in-flight requests finish; new connections are refused until it is started again a
moment later). At the end every acknowledged create and patch must read back exactly as
acknowledged, every acknowledged delete must be gone, and every message in the database
must have its whole set of child rows.
"""
import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, text

from databases import fresh_database

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("LOAD_SERVER_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
DATABASE = "messenger_load"
SMS = "/ux/common/messenger/sms/"
PORT = 8093


def message_body(n: int) -> dict:
    """Every message has 3 attachment ids and 6 key/value rows, before and after patches."""
    return {"ref_id": f"ref-{n}", "msg_type": n % 7, "attachment_ids": [f"a{n}", f"b{n}", f"c{n}"],
            "message_read_map": [{"keys": "u1", "values": str(n)}, {"keys": "u2"}],
            **{f"{c}_data": {"keys": c, "values": str(n)} for c in ("email", "sms", "api", "beep")}}


def patch_value(field: str, value):
    """A patched field as the API shows it (key/value objects get their missing keys)."""
    defaults = {"keys": None, "values": None, "queryparam": False}
    if field == "message_read_map":
        return [{**defaults, **item} for item in value]
    return {**defaults, **value} if field.endswith("_data") else value


def patch_body(n: int) -> dict:
    return {"ref_display_id": f"patched-{n}", "attachment_ids": [f"x{n}", f"y{n}", f"z{n}"],
            "message_read_map": [{"keys": "p1", "values": str(n)}, {"keys": "p2"}],
            "sms_data": {"keys": "sms", "values": f"patched-{n}"}}


class Client(threading.Thread):
    def __init__(self, key: str, deadline: float, seed: int):
        super().__init__()
        self.headers = {"Authorization": key, "Content-Type": "application/json"}
        self.deadline, self.random = deadline, random.Random(seed)
        self.latencies, self.statuses = [], Counter()
        self.answered = []  # (started, finished) of every answered request
        self.expected = {}  # id -> the message as last acknowledged
        self.deleted = set()
        self.uncertain = {}  # id -> (before, patch or None for a delete): answer lost

    def request(self, method: str, path: str, body=None):
        started = time.perf_counter()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            connection.request(method, path, None if body is None else json.dumps(body),
                               self.headers)
            response = connection.getresponse()
            status, data = response.status, response.read()
            connection.close()
        except ConnectionRefusedError:  # never sent: the server is restarting
            self.statuses["refused"] += 1
            time.sleep(0.05)
            return "refused", None
        except OSError:  # sent, but no answer: the write may or may not have happened
            self.statuses["no answer"] += 1
            return None, None
        self.latencies.append(time.perf_counter() - started)
        self.answered.append((started, time.perf_counter()))
        self.statuses[status] += 1
        return status, data

    def run(self):
        n = 0
        while time.monotonic() < self.deadline:
            n += 1
            live = [i for i in self.expected if i not in self.deleted and i not in self.uncertain]
            action = self.random.choices(["create", "read", "list", "patch", "delete"],
                                         [30, 30, 15, 15, 10])[0]
            if action == "create" or not live:
                status, data = self.request("POST", SMS, message_body(n))
                if status == 201:
                    message = json.loads(data)
                    self.expected[message["id"]] = message
            elif action == "read":
                self.request("GET", f"{SMS}{self.random.choice(live)}/")
            elif action == "list":
                self.request("GET", f"{SMS}?page_size=50&page={self.random.randint(1, 5)}")
            elif action == "patch":
                target = self.random.choice(live)
                status, data = self.request("PATCH", f"{SMS}{target}/", patch_body(n))
                if status == 200:
                    self.expected[target] = json.loads(data)
                elif status is None:
                    self.uncertain[target] = (self.expected[target], patch_body(n))
            else:
                target = self.random.choice(live)
                status, _ = self.request("DELETE", f"{SMS}{target}/")
                if status == 204:
                    self.deleted.add(target)
                elif status is None:
                    self.uncertain[target] = (self.expected[target], None)


def start_server(env: dict) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "3", "--graceful-timeout", "30",
         "--backlog", "2048", "--bind", f"127.0.0.1:{PORT}", "wsgi:app"],
        cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=1)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gunicorn did not start")


def verify(clients: list[Client], key: str, url: str) -> Counter:
    checker = Client(key, 0, 0)
    found = Counter()
    for client in clients:
        for message_id, (before, patch) in client.uncertain.items():
            status, data = checker.request("GET", f"{SMS}{message_id}/")
            now = json.loads(data) if status == 200 else None
            whole = now == before or (patch is None and status == 404) or (
                patch is not None and now is not None
                and all(now[field] == patch_value(field, value) for field, value in patch.items()))
            found["unanswered write: all or nothing" if whole else "HALF-APPLIED WRITE"] += 1
        for message_id, message in client.expected.items():
            if message_id in client.uncertain:
                continue
            status, data = checker.request("GET", f"{SMS}{message_id}/")
            if message_id in client.deleted:
                found["deleted and gone" if status == 404 else "DELETED BUT STILL THERE"] += 1
            elif status != 200:
                found["ACKNOWLEDGED BUT LOST"] += 1
            elif json.loads(data) != message:
                found["ACKNOWLEDGED BUT DIFFERENT"] += 1
            else:
                found["acknowledged and intact"] += 1
    engine = create_engine(url)
    with engine.connect() as connection:
        found["HALF-WRITTEN MESSAGES"] = connection.scalar(text(
            "SELECT count(*) FROM messages m WHERE"
            " (SELECT count(*) FROM message_attachments a WHERE a.message_id = m.id) <> 3"
            " OR (SELECT count(*) FROM message_key_values k WHERE k.message_id = m.id) <> 6"))
        found["messages in the database"] = connection.scalar(text("SELECT count(*) FROM messages"))
    engine.dispose()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()

    url = fresh_database(SERVER_URL, DATABASE)
    env = {**os.environ, "DATABASE_URL": url}
    key = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "api-key", "create",
                          "--all-organizations", "--name", "load"], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True).stdout.split()[-1]
    server = start_server(env)
    started = time.monotonic()
    clients = [Client(key, started + args.seconds, seed) for seed in range(args.clients)]
    for client in clients:
        client.start()

    time.sleep(args.seconds / 2)
    sigterm = time.perf_counter()
    server.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish
    server.wait(timeout=60)
    stopped = time.monotonic()
    server = start_server(env)
    restart_seconds = time.monotonic() - stopped
    for client in clients:
        client.join()
    elapsed = time.monotonic() - started

    latencies = sorted(t for client in clients for t in client.latencies)
    statuses = sum((client.statuses for client in clients), Counter())
    print(f"{args.clients} clients, {elapsed:.1f} s, SIGTERM at {args.seconds / 2:.0f} s, "
          f"restarted in {restart_seconds:.1f} s")
    print(f"answered requests: {len(latencies)} ({len(latencies) / elapsed:.0f}/s), "
          f"p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms")
    print("statuses:", dict(sorted(statuses.items(), key=str)))
    across = sum(1 for client in clients for started, finished in client.answered
                 if started < sigterm < finished)
    print(f"requests under way at SIGTERM and answered after it: {across}; 'no answer' are "
          "connections still queued in the listen backlog, reset when gunicorn closed it")
    five_hundreds = sum(n for status, n in statuses.items()
                        if isinstance(status, int) and status >= 500)
    print("5xx:", five_hundreds)
    found = verify(clients, key, url)
    print("verification:", dict(found))
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    failures = sum(n for what, n in found.items() if what.isupper())  # the upper-case ones
    sys.exit(1 if failures or five_hundreds else 0)


if __name__ == "__main__":
    main()
