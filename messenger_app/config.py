"""Configuration: the settings an app reads from environment variables when it is made
(see README, "Configuration"), and those that are fixed."""
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_ROOT / 'instance' / 'messenger.db'}"


def from_environment(environ: Mapping[str, str]) -> dict:
    """The settings that environment variables choose, read from `environ`."""

    def flag(name: str, default: str) -> bool:
        return environ.get(name, default).lower() in ("1", "true", "yes")

    return {
        "DATABASE_URL": environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        # PostgreSQL: how long a request may wait to connect (s) and for one statement (ms)
        # before it is answered 503.
        "DATABASE_CONNECT_TIMEOUT": int(environ.get("DATABASE_CONNECT_TIMEOUT", "3")),
        "DATABASE_STATEMENT_TIMEOUT": int(environ.get("DATABASE_STATEMENT_TIMEOUT", "10000")),
        # Streaming read replicas (comma-separated URLs) for GET one, lists and `export`;
        # one further behind than the max lag gets no reads until it catches up.
        "DATABASE_REPLICA_URLS": [url.strip() for url in
                                  environ.get("DATABASE_REPLICA_URLS", "").split(",")
                                  if url.strip()],
        "DATABASE_REPLICA_MAX_LAG_SECONDS": float(
            environ.get("DATABASE_REPLICA_MAX_LAG_SECONDS", "5")),
        # DATABASE_URL (and the replicas' URLs) reach PostgreSQL through a PgBouncer in
        # transaction pooling mode: no prepared statements, no startup options.
        "DATABASE_TRANSACTION_POOLING": flag("DATABASE_TRANSACTION_POOLING", "false"),
        # A URL of PostgreSQL itself, not of a transaction pooler, for what needs a session of
        # its own: the API key change listener (LISTEN) and import-mongo (a temporary
        # table). Without it: DATABASE_URL, unless that goes through a transaction pooler
        # (then keys are looked up on every request and import-mongo asks for it).
        "DATABASE_SESSION_URL": environ.get("DATABASE_SESSION_URL", ""),
        # Page mode counts matches up to this many; past it, X-Pagination has no total.
        "LIST_COUNT_LIMIT": int(environ.get("LIST_COUNT_LIMIT", "10000")),
        # Limits of what a client may send (413 past the body size, 422 naming the field past
        # the others). Flask enforces MAX_CONTENT_LENGTH itself.
        "MAX_CONTENT_LENGTH": int(environ.get("MAX_BODY_BYTES", str(1024 * 1024))),
        # Strings in B-tree indexes (organization, user_id, ref_id, customer_id,
        # communication_id): an index entry must fit in 2,704 bytes, and the widest,
        # (organization, user_id) of ix_messages_unread, holds two of them: 300 characters of
        # 4-byte UTF-8 each fit with room to spare (330 would be the most). Other strings
        # (attachment ids, keys and values included) are limited only by MAX_TEXT_LENGTH.
        "MAX_INDEXED_TEXT_LENGTH": int(environ.get("MAX_INDEXED_TEXT_LENGTH", "300")),
        "MAX_TEXT_LENGTH": int(environ.get("MAX_TEXT_LENGTH", "100000")),
        "MAX_LIST_LENGTH": int(environ.get("MAX_LIST_LENGTH", "1000")),

        # A process trusts an API key it looked up for this long at most (PostgreSQL; a
        # revocation reaches every process at once by NOTIFY, and within this if that is lost).
        "API_KEY_CACHE_SECONDS": float(environ.get("API_KEY_CACHE_SECONDS", "5")),

        # Idempotency-Key: how long a stored response is replayed (then the key may be used
        # afresh and its row is deleted), and after how long a claim still in flight is taken
        # to be a crashed worker's and may be claimed again (longer than a request can run:
        # gunicorn's timeout is 30 s).
        "IDEMPOTENCY_TTL_SECONDS": int(environ.get("IDEMPOTENCY_TTL_SECONDS", str(24 * 3600))),
        "IDEMPOTENCY_STALE_SECONDS": int(environ.get("IDEMPOTENCY_STALE_SECONDS", "60")),

        # Live updates (GET /ux/common/messenger/sms/events/): events are kept this many days,
        # then purged (an older cursor is a 410); a stream sends a comment after this many
        # seconds without an event (proxies close idle connections), and is dropped when it
        # could not write for the last (a client that stops reading resumes later).
        "EVENTS_RETENTION_DAYS": float(environ.get("EVENTS_RETENTION_DAYS", "7")),
        "EVENTS_HEARTBEAT_SECONDS": float(environ.get("EVENTS_HEARTBEAT_SECONDS", "15")),
        "EVENTS_WRITE_TIMEOUT_SECONDS": float(environ.get("EVENTS_WRITE_TIMEOUT_SECONDS", "30")),

        # Browser origins allowed to call the API (comma-separated; "*" for any; none by
        # default: CORS is off until configured).
        "CORS_ORIGINS": [origin.strip() for origin in environ.get("CORS_ORIGINS", "").split(",")
                         if origin.strip()],

        # Behind this many reverse proxies, trust their X-Forwarded-For/-Proto/-Host (for the
        # client's address and scheme); 0 when clients connect directly.
        "PROXY_HOPS": int(environ.get("PROXY_HOPS", "0")),
        # The URL clients reach the service at (https://api.example.com), for the Location
        # and Link headers; without it they are relative (/ux/...). Never the request's Host.
        "PUBLIC_BASE_URL": environ.get("PUBLIC_BASE_URL", ""),
        # "json": one JSON object a log line; "text" for reading in a terminal.
        "LOG_FORMAT": environ.get("LOG_FORMAT", "json"),
        # One log line per request (off: only warnings and errors are logged).
        "LOG_REQUESTS": flag("LOG_REQUESTS", "true"),
        # Prometheus metrics at /metrics, open without a key (off: a 404, and no per-request
        # cost).
        "METRICS": flag("METRICS", "true"),
    }


class Config:
    """The settings no environment variable chooses."""

    # flask-smorest / OpenAPI
    API_TITLE = "Messenger SMS API"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "openapi.json"
    API_SPEC_OPTIONS = {
        "components": {"securitySchemes": {"ApiKey": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": "The API key, bare or after `Token`, `Bearer` or `Api-Key`.",
        }}},
        "security": [{"ApiKey": []}],
        # Relative: the host that serves the document (and /docs' "Try it out").
        "servers": [{"url": "/", "description": "This service."}],
        "info": {"description": (
            "SMS messages, as the original Django REST framework service served them. Every "
            "request under `/ux/` carries an API key in `Authorization`. Errors are JSON "
            "(the `Error` schema); every response has an `X-Request-ID` (the client's, or "
            "a new one), which the service's log lines carry too.")},
    }
    # Interactive docs at /docs: Swagger UI, its files served by this service from the
    # swagger-ui-bundle package (openapi.Api), so it works with no internet access.
    OPENAPI_SWAGGER_UI_PATH = "docs"
    OPENAPI_SWAGGER_UI_URL = "/docs/assets/"
    # No validator badge (fetched from swagger.io); links to operations: /docs#/sms/create_message
    OPENAPI_SWAGGER_UI_CONFIG = {"validatorUrl": None, "deepLinking": True}


def derived_limits(config) -> dict:
    """Settings that follow from others of the app's `config`. Forms are parsed by werkzeug,
    whose own limits would refuse (413) a form that is within the limits above: its text may
    be as large as any body, and a form of MAX_LIST_LENGTH read-map entries has three parts
    an entry."""
    return {"MAX_FORM_MEMORY_SIZE": config["MAX_CONTENT_LENGTH"],
            "MAX_FORM_PARTS": 4 * config["MAX_LIST_LENGTH"] + 100}


def session_url(config) -> str | None:
    """The URL for what needs a session of its own (DATABASE_SESSION_URL); None: none."""
    if config["DATABASE_SESSION_URL"]:
        return config["DATABASE_SESSION_URL"]
    return None if config["DATABASE_TRANSACTION_POOLING"] else config["DATABASE_URL"]
