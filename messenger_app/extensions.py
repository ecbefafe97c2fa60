"""Extensions created unbound at import time and bound to an app by the factory."""
from pathlib import Path

import flask_smorest
from flask import current_app, g
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


class Api(flask_smorest.Api):
    """flask-smorest's Api; every error body also says in `message` what went wrong, and a
    405 keeps its `Allow` header."""

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


api = Api()


class Database:
    """One engine per app (so per process), one session per request, closed at teardown."""

    def init_app(self, app) -> None:
        engine = make_engine(app.config["DATABASE_URL"])
        app.extensions["database"] = sessionmaker(engine, expire_on_commit=False)
        app.teardown_appcontext(self._close_session)

    @property
    def engine(self) -> Engine:
        return current_app.extensions["database"].kw["bind"]

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = current_app.extensions["database"]()
        return g.db_session

    @staticmethod
    def _close_session(_exc) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


def make_engine(url: str) -> Engine:
    engine = create_engine(url, pool_pre_ping=True)
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
