"""Extensions created unbound at import time and bound to an app by the factory."""
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from http import HTTPStatus
from pathlib import Path

import flask_smorest
from flask import current_app, g, send_from_directory
from flask_smorest.utils import prepare_response
from marshmallow import Schema, fields
from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.http import HTTP_STATUS_CODES

log = logging.getLogger(__name__)


class ErrorSchema(Schema):
    """Every error body: flask-smorest's form, with `message` always present."""

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    status = fields.String(required=True, metadata={"description": "Its name."})
    message = fields.String(required=True, metadata={"description": "What went wrong."})
    errors = fields.Dict(metadata={"description": (
        "Field errors, by where they are (`json`: the body, `query`: the query string, "
        "`headers`), then by field, parameter or header, each a list of messages.")})


def error_response(code: int, description: str, message: str, headers: dict | None = None,
                   **example) -> dict:
    """An error response of the OpenAPI document, with an example body."""
    example = {"code": code, "status": HTTP_STATUS_CODES[code], "message": message, **example}
    response = {"description": description, "schema": ErrorSchema, "example": example}
    return {**response, "headers": headers} if headers else response


def string_header(description: str) -> dict:
    return {"description": description, "schema": {"type": "string"}}


# The errors the operations document, by reference to their status's name (NOT_FOUND, ...).
ERROR_RESPONSES = [
    error_response(400, "The body is not JSON, or not a JSON object.",
                   "The body is not valid JSON."),
    error_response(401, "The API key is missing, unknown or revoked.",
                   "A valid API key is required in the Authorization header.",
                   {"WWW-Authenticate": string_header('`Token realm="messenger"`.')}),
    error_response(403, "The body names an organization that the key can't write to.",
                   "This API key can't write messages of another organization."),
    error_response(404, "No such message (another organization's messages are not found "
                        "either).", "No such message."),
    error_response(409, "A request with the same Idempotency-Key is still running: nothing "
                        "was applied; retry after `Retry-After` seconds.",
                   "A request with this Idempotency-Key is still running; retry shortly.",
                   {"Retry-After": string_header("Seconds to wait before retrying.")}),
    error_response(412, "`If-Match` no longer matches the message's ETag: nothing changed.",
                   "The message has changed since the ETag in If-Match."),
    error_response(413, "The body is over the size limit (MAX_BODY_BYTES, 1 MiB by default).",
                   "The data value transmitted exceeds the capacity limit."),
    error_response(415, "The body is not `application/json`.",
                   "The body must be application/json."),
    error_response(422, "Fields, query parameters or the Idempotency-Key that are not valid "
                        "(or the key was used for another request), named in `errors`.",
                   "The request's fields or parameters are not valid: see errors.",
                   errors={"json": {"msg_type": ["Not a valid integer."]}}),
    error_response(503, "The database can't be reached or timed out: retry after "
                        "`Retry-After` seconds.",
                   "The database can't be reached just now; try again shortly.",
                   {"Retry-After": string_header("Seconds to wait before retrying.")}),
]


def nullable_object_as_all_of(_converter, _field, ret: dict, **_kwargs) -> dict:
    """A nullable nested object as `{"allOf": [its schema], "nullable": true}`: OpenAPI 3.0's
    form that client generators read as "that object or null". (apispec writes an `anyOf`
    with a free-form object, which they turn into a second, shapeless type.)"""
    free_form = {"type": "object", "nullable": True}
    alternatives = ret.get("anyOf", [])
    if len(alternatives) == 2 and free_form in alternatives:
        del ret["anyOf"]
        return {"allOf": [a for a in alternatives if a != free_form], "nullable": True}
    return {}


class Api(flask_smorest.Api):
    """flask-smorest's Api; every error body also says in `message` what went wrong, and a
    405 keeps its `Allow` header. The OpenAPI document describes each error the operations
    give; Swagger UI at /docs is served from a package, with no CDN."""

    ERROR_SCHEMA = ErrorSchema

    def _init_spec(self, **kwargs):
        super()._init_spec(**kwargs)
        self.ma_plugin.converter.add_attribute_function(nullable_object_as_all_of)

    def _register_responses(self):
        super()._register_responses()
        for response in deepcopy(ERROR_RESPONSES):
            name = HTTPStatus(response["example"]["code"]).name
            prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
            self.spec.components.response(name, response, lazy=True)

    def _register_swagger_ui_rule(self, blueprint):
        super()._register_swagger_ui_rule(blueprint)
        blueprint.add_url_rule("/docs/assets/<path:filename>", endpoint="swagger_ui_assets",
                               view_func=swagger_ui_asset)

    def handle_http_exception(self, error):
        payload, code, headers = super().handle_http_exception(error)
        message = payload.pop("message", None) or (
            "The request's fields or parameters are not valid: see errors."
            if code == 422
            else error.description
        )
        allow = {k: v for k, v in error.get_headers() if k == "Allow"}
        body = {"code": code, "status": payload["status"], "message": message, **payload}
        return body, code, {**allow, **(headers or {})}


def swagger_ui_asset(filename: str):
    """Swagger UI's scripts and styles, from the swagger-ui-bundle package."""
    return send_from_directory(swagger_ui_path, filename)


api = Api()


class Database:
    """One engine per app (so per process), and one connection per thread, kept across
    requests (taking a connection from the pool and giving it back costs more than a
    query). It is in autocommit mode, so reads cost no BEGIN/ROLLBACK round trips; see
    `transaction()` for writes of several statements. Commands use an ORM session."""

    def init_app(self, app) -> None:
        engine = make_engine(app.config["DATABASE_URL"], app.config["DATABASE_CONNECT_TIMEOUT"],
                             app.config["DATABASE_STATEMENT_TIMEOUT"])
        app.extensions["database"] = (engine, threading.local())
        app.teardown_appcontext(self._end_request)
        app.register_error_handler(OperationalError, database_unavailable)

    @property
    def engine(self) -> Engine:
        return current_app.extensions["database"][0]

    def connection(self) -> Connection:
        engine, local = current_app.extensions["database"]
        if getattr(local, "connection", None) is None:
            local.connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return local.connection

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = Session(self.engine, expire_on_commit=False)
        return g.db_session

    @staticmethod
    def _end_request(_exc) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()
        local = current_app.extensions["database"][1]
        connection = getattr(local, "connection", None)
        if connection is not None and connection.invalidated:  # lost: the next request
            local.connection = None                            # connects anew
            connection.close()


@contextmanager
def transaction(connection: Connection) -> Iterator[Connection]:
    """Make the statements run on a request's autocommit connection commit together. Inside
    another `transaction()` (an idempotent write), they join it."""
    if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        yield connection
        return
    connection.commit()  # ends SQLAlchemy's autobegun autocommit "transaction"; no I/O
    connection.execution_options(isolation_level=connection.default_isolation_level)
    try:
        with connection.begin():
            yield connection
    finally:
        if not connection.invalidated:  # a lost connection is replaced at teardown
            connection.execution_options(isolation_level="AUTOCOMMIT")


def database_unavailable(error: OperationalError):
    """503, in the API's JSON, when the database can't be reached or gives up (connection
    refused or lost, timeouts, SQLite busy); the details go to the log only."""
    log.error("Database unavailable: %s", error.orig, exc_info=error)
    response = api.handle_http_exception(ServiceUnavailable(
        "The database can't be reached just now; try again shortly."))
    body, code, headers = response
    return body, code, {**headers, "Retry-After": "1"}


def make_engine(url: str, connect_timeout: int | None = None,
                statement_timeout_ms: int | None = None) -> Engine:
    """The engine for `url`; on PostgreSQL, timeouts bound how long a request can wait for a
    database that is down or stuck (migrations run without them). JIT is off: it compiles
    a statement the planner guesses costly (a list on a million rows whose statistics are
    stale, say) and took 100 ms to save nothing on statements that run in a few."""
    connect_args = {}
    if url.startswith("postgresql"):
        settings = ["-c jit=off"]
        if connect_timeout:
            connect_args["connect_timeout"] = connect_timeout
        if statement_timeout_ms:
            settings.append(f"-c statement_timeout={statement_timeout_ms}")
        connect_args["options"] = " ".join(settings)
    engine = create_engine(url, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        if engine.url.database not in (None, "", ":memory:"):
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection, _record) -> None:
    # SQLite leaves foreign keys (and so ON DELETE CASCADE) off unless asked on every
    # connection; WAL and a busy timeout let several gunicorn workers share the file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA busy_timeout = 5000")
    cursor.close()


db = Database()
