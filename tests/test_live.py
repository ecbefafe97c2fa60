"""Live updates through a real gunicorn (gunicorn.conf.py, gevent workers), on SQLite and
PostgreSQL: a stream's headers go out before any event, events and heartbeats follow, and
SIGTERM ends it cleanly so that the workers exit before graceful_timeout; a subscriber that
stops reading is dropped instead of holding its events in the server; a browser follows
with the README's reader."""
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from helpers import (EVENTS, SMS, chromium, dispose_app, free_port, http, make_key,
                     migrated_database, wait_until_serving)
from messenger_app import create_app
from messenger_app.config import PROJECT_ROOT


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path_factory) -> str:
    return migrated_database(request.param, tmp_path_factory, "live")


def start(database: str, log, **settings) -> tuple[subprocess.Popen, str, dict]:
    """gunicorn as `make run` starts it, two workers; its base URL and a key of `acme`."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database, "PORT": str(port), "WEB_CONCURRENCY": "2",
           "LOG_REQUESTS": "false", **{name: str(value) for name, value in settings.items()}}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                               "--no-control-socket", "wsgi:app"], cwd=PROJECT_ROOT, env=env,
                              stderr=log)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, server)
    app = create_app({"DATABASE_URL": database})
    try:
        key = make_key(app, "acme")
    finally:
        dispose_app(app)
    return server, base, key


def open_stream(base: str, key: dict, receive_buffer: int | None = None) -> socket.socket:
    port = int(base.rsplit(":", 1)[1])
    client = socket.socket()
    if receive_buffer:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.settimeout(60)  # a stream that never ends fails the test instead of hanging it
    client.connect(("127.0.0.1", port))
    client.sendall(f"GET {EVENTS} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                   f"Authorization: {key['Authorization']}\r\n\r\n".encode())
    return client


def read_until(client: socket.socket, received: bytearray, marker: bytes) -> bytes:
    while marker not in received:
        data = client.recv(65536)
        assert data, f"the stream ended before {marker!r}: {bytes(received)[-500:]!r}"
        received += data
    end = received.index(marker) + len(marker)
    found = bytes(received[:end])
    del received[:end]
    return found


def read_to_the_end(client: socket.socket) -> bytes:
    received = bytearray()
    try:
        while data := client.recv(65536):
            received += data
    except ConnectionResetError:
        pass
    return bytes(received)


def test_a_stream_sends_headers_at_once_then_events_and_ends_on_sigterm(database, tmp_path):
    with open(tmp_path / "gunicorn.log", "w+") as log:
        server, base, key = start(database, log, EVENTS_HEARTBEAT_SECONDS=0.2)
        try:
            client = open_stream(base, key)
            received = bytearray()
            head = read_until(client, received, b"\r\n\r\n").decode()
            assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head
            assert "Transfer-Encoding: chunked" in head and "id:" not in head
            status, _, body = http("POST", f"{base}{SMS}", key, {"ref_id": "live"})
            assert status == 201
            read_until(client, received, b"retry: ")
            event = read_until(client, received, b"event: ") + read_until(client, received,
                                                                           b"\n\n")
            read_until(client, received, b": keep-alive\n\n")  # a heartbeat, when idle
            server.send_signal(signal.SIGTERM)
            rest = bytes(received) + read_to_the_end(client)
            assert server.wait(timeout=60) == 0
        finally:
            if server.poll() is None:
                server.kill()
        log.seek(0)
        logged = log.read()

    data = json.loads(event.split(b"data: ")[1].split(b"\n")[0])
    assert b"event: created" in event and data == {"id": json.loads(body)["id"],
                                                   "message": json.loads(body)}
    assert rest.endswith(b"0\r\n\r\n")  # the chunked body's end: the stream was ended
    assert "graceful timeout" not in logged and "[ERROR]" not in logged  # none killed


def test_a_subscriber_that_stops_reading_is_dropped(tmp_path_factory, tmp_path):
    """Its events are not held for it: once a write has waited
    EVENTS_WRITE_TIMEOUT_SECONDS, the connection is closed (the client resumes later).
    Heartbeats are rarer than the client's socket timeout: a stream left open fails the test
    rather than feeding it forever."""
    database = migrated_database("postgresql", tmp_path_factory, "live_slow")
    with open(tmp_path / "gunicorn.log", "w") as log:
        server, base, key = start(database, log, EVENTS_WRITE_TIMEOUT_SECONDS=1,
                                  EVENTS_HEARTBEAT_SECONDS=600)
        try:
            client = open_stream(base, key, receive_buffer=4096)
            read_until(client, bytearray(), b"retry: ")
            large = {"ref_display_id": "x" * 90_000}
            for _ in range(150):  # some 13 MB of events: more than the sockets' buffers
                assert http("POST", f"{base}{SMS}", key, large)[0] == 201
            time.sleep(3)  # not reading, for thrice the write timeout: a write gives up
            received = read_to_the_end(client)
            assert http("GET", f"{base}{SMS}?page_size=1", key)[0] == 200
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)

    assert 0 < received.count(b"event: created") < 150
    assert not received.endswith(b"0\r\n\r\n")  # cut off, not ended


# --- The browser path (README: a fetch-based reader, since EventSource sends no header) ---

PAGE = """<!doctype html><title>live updates</title><script>
%(snippet)s
const base = %(base)s, key = %(key)s, stop = new AbortController(), seen = [];
const report = (result) => fetch(%(collector)s, {method: "POST", body: result});
followMessages(base, key, (kind, data, id) => {
  seen.push([kind, data.id, data.message.ref_id]);
  if (seen.length === 1) {  // a change made while the page follows
    fetch(`${base}/ux/common/messenger/sms/`, {method: "POST", body: '{"ref_id": "page"}',
      headers: {Authorization: `Token ${key}`, "Content-Type": "application/json"}});
  }
  if (seen.length === 3) { stop.abort(); report(JSON.stringify(seen)); }
}, {lastEventId: %(cursor)s, signal: stop.signal}).catch((error) => {
  if (!stop.signal.aborted) report(`failed: ${error}`);
});
</script>"""


def readme_snippet() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    return re.search(r"```js\n(.*?)```", readme, re.S).group(1)


class Collector(BaseHTTPRequestHandler):
    """What the page reports: the body of its POST."""

    reports: queue.Queue = queue.Queue()

    def do_POST(self):  # noqa: N802 - http.server's name
        self.reports.put(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_browser_follows_and_resumes_with_the_readme_reader(tmp_path_factory, tmp_path):
    """Headless Chromium runs README's followMessages from a page of another origin (CORS):
    it resumes after the first of three messages, and gets a change made meanwhile."""
    database = migrated_database("postgresql", tmp_path_factory, "live_browser")
    collector = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    with open(tmp_path / "gunicorn.log", "w") as log:
        server, base, key = start(database, log, CORS_ORIGINS="*")
        browser = None
        try:
            made = [json.loads(http("POST", f"{base}{SMS}", key, {"ref_id": str(n)})[2])["id"]
                    for n in range(3)]
            cursor = json.loads(http("GET", f"{base}{EVENTS}", key)[2])[0]["event_id"]
            page = tmp_path / "page.html"
            page.write_text(PAGE % {
                "snippet": readme_snippet(), "base": json.dumps(base),
                "key": json.dumps(key["Authorization"].split()[1]), "cursor": json.dumps(cursor),
                "collector": json.dumps(f"http://127.0.0.1:{collector.server_port}/")})
            browser = subprocess.Popen(
                [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", page.as_uri()],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            reported = Collector.reports.get(timeout=60)
            listed = json.loads(http("GET", f"{base}{SMS}?ref_id=page", key)[2])
        finally:
            if browser is not None:
                browser.kill()
                browser.wait(timeout=30)
            collector.shutdown()
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)

    assert reported.startswith("["), reported
    assert json.loads(reported) == [["created", made[1], "1"], ["created", made[2], "2"],
                                    ["created", listed[0]["id"], "page"]]
