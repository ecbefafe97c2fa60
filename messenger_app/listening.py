"""LISTEN connections: a process's own sessions on PostgreSQL itself (LISTEN needs one: a
transaction pooler hands each transaction another server connection), for NOTIFY. Used by
the API key cache (key_cache.py) and the live-updates feed (live.py), whose notifier sends
its NOTIFY on one too."""
from typing import Any

import psycopg
from sqlalchemy import make_url

# libpq: notice a dead peer of the idle listening connection within seconds, and give up on
# data the network no longer acknowledges (the LISTEN of a reconnection).
LIVENESS: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 1,
                            "keepalives_count": 3, "tcp_user_timeout": 5000}


def can_listen(url: str | None) -> bool:
    """Whether `url` (a session URL, config.session_url) is a PostgreSQL to LISTEN on."""
    return url is not None and make_url(url).get_backend_name() == "postgresql"


def connect(url: str, connect_timeout: int, **options: Any) -> psycopg.Connection:
    """A new autocommit connection of the process's own to `url` (psycopg.Error if the
    database can't be reached)."""
    libpq_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(libpq_url, autocommit=True, connect_timeout=connect_timeout,
                           **LIVENESS, **options)


def listen(url: str, channel: str, connect_timeout: int) -> psycopg.Connection:
    """A new autocommit connection to `url`, LISTENing on `channel` (psycopg.Error if the
    database can't be reached)."""
    listener = connect(url, connect_timeout)
    try:
        listener.execute(f"LISTEN {channel}")
    except psycopg.Error:
        listener.close()
        raise
    return listener
