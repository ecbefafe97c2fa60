"""The messenger service: a REST API for SMS messages. `create_app` wires one app
(README, "Layout", says which module owns what)."""
import os
from collections.abc import Mapping

from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from . import cli, events, health, idempotency, logs, messages, metrics
from .api import Api
from .config import Config, derived_limits, from_environment, session_url
from .db import db
from .key_cache import KeyCache
from .live import Feed, Notifier


def create_app(config: Mapping | None = None) -> Flask:
    """An app with the settings of the environment, overridden by `config`."""
    app = App(__name__)
    config = dict(config or {})
    app.config.from_object(Config)
    app.config.update(from_environment(os.environ))
    app.config.update(derived_limits({**app.config, **config}))
    app.config.update(config)
    assert isinstance(app.json, DefaultJSONProvider)
    app.json.sort_keys = False  # the contract fixes the order of a message's keys
    # A path without its trailing slash (or with a doubled one) is served or a JSON 404:
    # werkzeug's redirects to the right one have HTML bodies, and a Location from Host.
    app.url_map.strict_slashes = app.url_map.merge_slashes = False

    logs.init_app(app)
    db.init_app(app)
    app.extensions["api_key_cache"] = KeyCache(app.config["API_KEY_CACHE_SECONDS"],
                                               session_url(app.config),
                                               app.config["DATABASE_CONNECT_TIMEOUT"])
    app.extensions["live_feed"] = Feed(app.extensions["feed_database"], session_url(app.config),
                                       app.config["DATABASE_CONNECT_TIMEOUT"],
                                       app.config["EVENTS_RETENTION_DAYS"])
    app.extensions["live_notifier"] = Notifier(session_url(app.config),
                                               app.config["DATABASE_CONNECT_TIMEOUT"])
    app.url_map.converters["objectid"] = messages.ObjectIdConverter
    api = Api(app)
    api.register_converter(messages.ObjectIdConverter, lambda _: messages.OBJECT_ID_PARAMETER)
    api.register_blueprint(messages.blp)
    api.register_blueprint(events.blp)
    api.spec.components.schema("MessageForm", messages.form_schema(api.ma_plugin.converter))
    api.register_blueprint(health.blp)
    api.register_blueprint(metrics.blp)
    if app.config["METRICS"]:
        metrics.init_app(app, app.extensions["database"])
    for commands in cli.commands:
        app.register_blueprint(commands)
    if app.config["CORS_ORIGINS"]:  # else no response pays for flask-cors' hook (3% of a POST)
        CORS(app, origins=app.config["CORS_ORIGINS"], max_age=600,
             allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Match",
                            "X-Request-ID", idempotency.HEADER, messages.CONSISTENCY_TOKEN,
                            events.LAST_EVENT_ID],
             expose_headers=["ETag", "Link", "X-Pagination", "Location", "X-Request-ID",
                             "Retry-After", idempotency.REPLAYED, messages.CONSISTENCY_TOKEN])
    app.after_request(no_content_type_without_content)
    if app.config["PROXY_HOPS"]:
        hops = app.config["PROXY_HOPS"]
        proxied = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
        app.wsgi_app = proxied  # type: ignore[method-assign]  # as Flask's docs do
    return app


class App(Flask):
    """Flask, whose every view and hook here is a plain function (gevent serves requests
    concurrently; there are no `async def` views): `ensure_sync`, which Flask calls for each
    hook and flask-smorest for each of its decorators, need not inspect them, on every
    request, to find one that is a coroutine (26 inspections a write)."""

    def ensure_sync(self, func):
        return func


def no_content_type_without_content(response: Response) -> Response:
    """A 204 or 304 has no body, so no Content-Type (werkzeug gives every response one;
    replayed Idempotency-Key answers included)."""
    if response.status_code in (204, 304):
        response.headers.pop("Content-Type", None)
    return response
