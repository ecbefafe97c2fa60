"""Request ids: taken from `X-Request-ID` (or made), returned on every response, and put in
every log line written while the request runs, so a client's report finds the server's log."""
import logging
import re
import uuid

from flask import Flask, g, has_request_context, request
from flask.logging import default_handler

ACCEPTABLE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def init_app(app: Flask) -> None:
    app.before_request(take_request_id)
    app.after_request(return_request_id)
    if not getattr(logging.getLogRecordFactory(), "adds_request_id", False):
        logging.setLogRecordFactory(record_factory(logging.getLogRecordFactory()))
    default_handler.setFormatter(logging.Formatter(
        "[%(asctime)s] %(levelname)s in %(name)s [request %(request_id)s]: %(message)s"))


def take_request_id() -> None:
    offered = request.headers.get("X-Request-ID", "")
    g.request_id = offered if ACCEPTABLE.fullmatch(offered) else uuid.uuid4().hex


def return_request_id(response):
    response.headers["X-Request-ID"] = g.get("request_id", "-")
    return response


def record_factory(make_record):
    """Every log record, from any logger, gets the request id (or "-")."""

    def make(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return record

    make.adds_request_id = True
    return make
