"""Plain helpers for the tests (the fixtures are in conftest.py): the test databases, API
keys, messages, real HTTP and servers, and faults to inject. Test modules import them with
`from helpers import ...`; no test module imports conftest or another test module."""
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import suppress
from typing import NamedTuple

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask
from sqlalchemy import create_engine, func, make_url, select, text

from messenger_app.config import PROJECT_ROOT
from messenger_app.db import db
from messenger_app.models import ApiKey, Attachment, KeyValue, Message

POSTGRES_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/messenger_test"
)
SMS = "/ux/common/messenger/sms/"
EVENTS = "/ux/common/messenger/sms/events/"
CLOSED_PORT_URL = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"  # no server


# --- Databases --------------------------------------------------------------------------

def on_postgresql(backend: str) -> bool:
    """Whether the `backend` fixture's database is PostgreSQL (directly or through
    PgBouncer)."""
    return backend in ("postgresql", "pgbouncer")


def alembic_config(url: str) -> AlembicConfig:
    config = AlembicConfig(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


def fresh_postgres_database(url: str) -> str:
    """Drop and create the database `url` names; skip (or, on CI, fail) if the server is down."""
    url = make_url(url)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    except Exception as error:  # noqa: BLE001 - any failure to reach the server
        message = f"PostgreSQL is not reachable at {url.render_as_string()}: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        server.dispose()
    return url.render_as_string(hide_password=False)


def fresh_database(backend: str, tmp_path_factory, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp(name) / 'messenger.db'}"
    return fresh_postgres_database(POSTGRES_URL if name == "main" else f"{POSTGRES_URL}_{name}")


def migrated_database(backend: str, tmp_path_factory, name: str) -> str:
    """A fresh database, at the latest migration."""
    url = fresh_database(backend, tmp_path_factory, name)
    command.upgrade(alembic_config(url), "head")
    return url


# --- Apps -------------------------------------------------------------------------------

def dispose_app(app: Flask) -> None:
    """Close every connection `app` holds open: its engine's pool and, on PostgreSQL, the
    API key cache's LISTEN connection, its replicas' (whose checks it stops), its live-updates
    feed (whose streams end). Left to garbage
    collection they close whenever it runs, in the middle of a later test (moving the pool
    gauges of /metrics, say). The one place that knows what an app holds; safe to call more
    than once."""
    app.extensions["live_feed"].stop()
    app.extensions["live_notifier"].stop()
    app.extensions["database"].dispose()
    app.extensions["feed_database"].dispose()
    app.extensions["replicas"].close()
    app.extensions["api_key_cache"].close()


# --- API keys ---------------------------------------------------------------------------

def make_key(app, organization: str | None) -> dict:
    with app.app_context():
        key, secret = ApiKey.generate(organization, name="test")
        db.session.add(key)
        db.session.commit()
    return {"Authorization": f"Token {secret}"}


def assert_refused_from_now_on(client, headers, within: float = 2) -> None:
    """A revoked key: refused within moments (on PostgreSQL, once the change notification
    reached this process, well under a millisecond), then always."""
    deadline = time.monotonic() + within
    while client.get(SMS, headers=headers).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key is still accepted"
        time.sleep(0.01)
    assert all(client.get(SMS, headers=headers).status_code == 401 for _ in range(5))


# --- Messages ---------------------------------------------------------------------------

STRING_FIELDS = [
    "communication_id", "type", "user_id", "received_config_id", "ref_id", "ref_display_id",
    "imap_config_id", "created_by", "customer_id", "customer_entity_id",
]


def full_message(organization="acme") -> dict:
    """Every writable field with a value that differs from its default."""
    return {
        "communication_id": "comm-1", "msg_type": 2, "type": "outbound", "user_id": "user-7",
        "received_config_id": "rc-3", "module_id": 14, "ref_id": "ticket-42",
        "ref_display_id": "T-42", "is_system_gen": True, "imap_config_id": "imap-1",
        "attachment_ids": ["att-3", "att-1", "att-2"], "created_by": "agent-5",
        "organization": organization, "creation_time": "2025-08-31T15:55:11.247Z",
        "last_update_time": "2025-09-01T08:00:00.000Z", "is_deleted": True,
        "is_assignee_read": True,
        "message_read_map": [
            {"keys": "user-7", "values": "2025-08-31T16:00:00Z", "queryparam": False},
            {"keys": "user-8", "values": "unread", "queryparam": True},
        ],
        "customer_id": "cust-9", "customer_entity_id": "ent-9", "is_description": True,
        "email_data": {"keys": "to", "values": "a@example.com", "queryparam": False},
        "sms_data": {"keys": "to", "values": "+15550100", "queryparam": True},
        "api_data": {"keys": "endpoint", "values": "/hooks/1", "queryparam": False},
        "beep_data": {"keys": "channel", "values": "ops", "queryparam": True},
    }


def create(client, headers, body=None) -> dict:
    response = client.post(SMS, json={} if body is None else body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def url(message_id: str) -> str:
    return f"{SMS}{message_id}/"


def row_counts(app) -> tuple[int, int, int]:
    with app.app_context():
        return tuple(
            db.session.scalar(select(func.count()).select_from(model))
            for model in (Message, Attachment, KeyValue)
        )


def feed(client, headers, query: str = "") -> list[dict]:
    """The live-updates feed's JSON page (`query`: its query string)."""
    response = client.get(f"{EVENTS}?{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def read_server_sent_events(lines, count: int) -> list[dict]:
    """The next `count` events (`{"id", "event", "data"}`) from `lines`, an iterator over a
    stream's text lines (comments and `retry:` are skipped)."""
    found: list[dict] = []
    event: dict = {}
    for line in lines:
        if not line:
            if event:
                found.append(event)
                event = {}
            if len(found) == count:
                return found
        elif not line.startswith((":", "retry:")):
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value
    raise AssertionError(f"the stream ended after {found}")


def stream_lines(response):
    """The text lines of a streamed Flask test client response."""
    pending = ""
    for chunk in response.response:
        pending += chunk.decode()
        *lines, pending = pending.split("\n")
        yield from lines


# --- Real HTTP and servers --------------------------------------------------------------

def http(method: str, target: str, headers: dict, body=None) -> tuple[int, dict, bytes]:
    """A real HTTP request: (status, headers, body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(target, data=data, method=method, headers={
        **headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def at_once(count: int, call) -> list:
    """call(0) ... call(count - 1), each in a thread of its own, all released together;
    their results, in that order."""
    start = threading.Barrier(count)
    results = [None] * count

    def run(n: int) -> None:
        start.wait()
        results[n] = call(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Service(NamedTuple):
    base: str  # http://127.0.0.1:PORT
    process: subprocess.Popen  # gunicorn's master
    app: Flask  # an app on the same database, to make keys with


def wait_until_serving(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            return
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "gunicorn didn't start"
            time.sleep(0.1)


def chromium() -> str:
    """Headless Chromium's path; skip (on CI, fail) without it."""
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed (.ci/run installs it: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# --- Faults -----------------------------------------------------------------------------

# A trigger that makes the database refuse every key/value row: a write fails halfway.
FAILING_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER fail_key_values BEFORE INSERT ON message_key_values "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION fail_key_values() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
        "CREATE TRIGGER fail_key_values BEFORE INSERT ON message_key_values "
        "FOR EACH ROW EXECUTE FUNCTION fail_key_values()",
    ],
}
DROP_TRIGGER = {
    "sqlite": ["DROP TRIGGER fail_key_values"],
    "postgresql": ["DROP TRIGGER fail_key_values ON message_key_values",
                   "DROP FUNCTION fail_key_values()"],
}


class TcpProxy:
    """A TCP proxy on a free loopback port to `target_port` on 127.0.0.1, for faults a
    network makes. `black_hole(port)` silently drops, both ways and for good, what the
    connection whose upstream side has local port `port` (pg_stat_activity.client_port)
    carries: as a firewall or NAT that forgot an idle connection would, with neither end
    told."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.black_holes: set[int] = set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def black_hole(self, upstream_port: int) -> None:
        self.black_holes.add(upstream_port)

    def close(self) -> None:
        for sock in [self.server, *self.sockets]:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            port = upstream.getsockname()[1]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, port),
                                 daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, port: int) -> None:
        try:
            while data := source.recv(65536):
                if port not in self.black_holes:
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# --- docs/reporting.md ------------------------------------------------------------------

def documented_queries() -> list[str]:
    document = (PROJECT_ROOT / "docs" / "reporting.md").read_text()
    return re.findall(r"^### \d+\..*?```sql\n(.*?)```", document, flags=re.S | re.M)


def documented_role_statements(reader: str, analyst: str, database: str) -> str:
    """docs/reporting.md's statements that make the read-only role and an analyst in it, with
    these names."""
    document = (PROJECT_ROOT / "docs" / "reporting.md").read_text()
    section = document[document.index("## A read-only role"):document.index("## Ten ready")]
    statements = "".join(re.findall(r"```sql\n(.*?)```", section, flags=re.S))
    statements = re.sub(r"\bmessenger_reader\b", reader, statements)
    statements = re.sub(r"\balice\b", analyst, statements)
    return statements.replace("DATABASE messenger ", f'DATABASE "{database}" ')
