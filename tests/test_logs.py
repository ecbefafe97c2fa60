"""Request ids and the log: one line per request, JSON by default, never the API key."""
import json
import logging
import sys

from helpers import SMS
from messenger_app.logs import JSONFormatter


def test_every_response_carries_a_request_id(client, acme):
    made = client.get(SMS, headers=acme).headers["X-Request-ID"]
    kept = client.get("/nowhere", headers={"X-Request-ID": "client-42"}).headers["X-Request-ID"]
    unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id\\n"}).headers["X-Request-ID"]

    assert len(made) == 32 and kept == "client-42" and unsafe not in ("bad id\\n", "")


def test_a_500_is_logged_with_its_request_id_and_shows_nothing(app, client, acme, monkeypatch,
                                                               caplog):
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    monkeypatch.setattr("messenger_app.queries.decode",
                        lambda row: 1 / 0)
    client.post(SMS, json={}, headers=acme)

    response = client.get(SMS, headers={**acme, "X-Request-ID": "trace-me"})

    assert response.status_code == 500 and response.headers["X-Request-ID"] == "trace-me"
    assert "ZeroDivisionError" not in response.get_data(as_text=True)
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged and logged[-1].request_id == "trace-me" and logged[-1].exc_info



def test_each_request_is_logged_once_with_its_facts(client, acme, caplog):
    caplog.set_level(logging.INFO, logger="messenger_app.requests")

    response = client.get(SMS, headers={**acme, "X-Request-ID": "r-1"})

    (record,) = [r for r in caplog.records if r.name == "messenger_app.requests"]
    assert record.http["method"] == "GET" and record.http["path"] == SMS
    assert record.http["status"] == response.status_code == 200
    assert record.http["organization"] == "acme" and record.http["duration_ms"] >= 0
    assert record.request_id == "r-1"
    line = json.loads(JSONFormatter().format(record))
    assert {"time", "level", "logger", "message", "request_id", "method", "path", "status",
            "duration_ms", "organization"} <= set(line)
    assert acme["Authorization"].split()[1] not in json.dumps(line)


def test_log_lines_can_be_plain_text(database_url, make_app):
    try:
        app = make_app({"DATABASE_URL": database_url, "LOG_FORMAT": "text"})
        record = logging.LogRecord("messenger_app", logging.INFO, __file__, 1, "hello", (), None)
        record.request_id = "r-2"
        (handler,) = app.logger.handlers
        assert handler.formatter.format(record).endswith("[request r-2]: hello")
    finally:
        make_app({"DATABASE_URL": database_url})  # back to JSON for the other tests


def test_text_log_lines_can_not_be_forged(database_url, acme, caplog, make_app):
    """`%0A` in a path would start a log line of the client's making."""
    try:
        app = make_app({"DATABASE_URL": database_url, "LOG_FORMAT": "text"})
        (handler,) = app.logger.handlers
        with caplog.at_level(logging.INFO, logger="messenger_app.requests"):
            app.test_client().get("/ux/x%0A[2026-01-01] INFO forged%0D%1B[2J%E2%80%A8",
                                  headers=acme)
        lines = [handler.formatter.format(record) for record in caplog.records]
        try:
            raise ValueError("bad input:\n[2026-01-01] INFO forged")
        except ValueError:
            error = logging.LogRecord("messenger_app", logging.ERROR, __file__, 1, "failed",
                                      (), sys.exc_info())
            error.request_id = "r-3"
        traceback_lines = handler.formatter.format(error).splitlines()
    finally:
        make_app({"DATABASE_URL": database_url})  # back to JSON for the other tests

    assert len(lines) == 1 and "\n" not in lines[0] and "\r" not in lines[0]
    assert "\\n[2026-01-01] INFO forged\\r\\x1b[2J\\u2028" in lines[0]
    assert traceback_lines[0].endswith("[request r-3]: failed")
    assert all(line.startswith("    ") for line in traceback_lines[1:])
