"""Request ids and logs. A request id is taken from `X-Request-ID` (or made), returned on
every response and put in every log line written while the request runs. Each request is
logged once, after it is answered (method, path, status, duration, organization, request
id; never the API key), as JSON lines, or as text with LOG_FORMAT=text."""
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime

import orjson
from flask import Flask, g, has_request_context, request
from flask.logging import default_handler

from .auth import scope_label

ACCEPTABLE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
request_log = logging.getLogger("messenger_app.requests")


def init_app(app: Flask) -> None:
    app.before_request(start_request)
    app.after_request(finish_request)
    # Straight to stderr: Flask's default handler writes through the WSGI server's error
    # stream, which is a second logging pipeline (gunicorn's) for every line.
    app.logger.removeHandler(default_handler)
    if not any(isinstance(h, RequestLogHandler) for h in app.logger.handlers):
        app.logger.addHandler(RequestLogHandler(sys.stderr))
    for handler in app.logger.handlers:
        handler.setFormatter(JSONFormatter() if app.config["LOG_FORMAT"] == "json" else
                             TextFormatter("[%(asctime)s] %(levelname)s %(name)s "
                                           "[request %(request_id)s]: %(message)s"))
    app.logger.setLevel(logging.INFO)
    request_log.setLevel(logging.INFO if app.config["LOG_REQUESTS"] else logging.WARNING)


def start_request() -> None:
    offered = request.headers.get("X-Request-ID", "")
    g.request_id = offered if ACCEPTABLE.fullmatch(offered) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def elapsed_seconds() -> float:
    """Seconds since the request started (its first before_request hook)."""
    return time.perf_counter() - g.get("request_started", 0)


def finish_request(response):
    response.headers["X-Request-ID"] = g.get("request_id", "-")
    if not request_log.isEnabledFor(logging.INFO):
        return response
    fields = {
        "method": request.method, "path": request.path, "status": response.status_code,
        "duration_ms": round(elapsed_seconds() * 1000, 2),
        "organization": scope_label(),
    }
    request_log.info("%(method)s %(path)s %(status)s %(duration_ms)sms", fields,
                     extra={"http": fields})
    return response


class RequestLogHandler(logging.StreamHandler):
    """The app's log handler: every record it writes, from any logger under the app's,
    carries the request id (or "-" outside a request)."""

    def handle(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return super().handle(record)


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, the request's
    fields for request lines, and the traceback of an error."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname, "logger": record.name,
                "message": record.getMessage(), "request_id": getattr(record, "request_id", "-"),
                **getattr(record, "http", {})}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


# Line breaks and other control characters (C0, DEL, NEL, the Unicode line and paragraph
# separators), which a client could put in a path to write a line of its own into the log.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def escape_controls(text: str) -> str:
    return CONTROL_CHARACTERS.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


class TextFormatter(logging.Formatter):
    """One line a record, control characters escaped (`\\n`); a traceback follows on lines
    of its own, each indented, so no text from a request can pass for a record. (JSON
    lines need nothing: JSON escapes control characters.)"""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei) -> str:
        return "\n".join("    " + escape_controls(line)
                         for line in super().formatException(ei).splitlines())
