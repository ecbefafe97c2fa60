"""PostgreSQL servers (a primary, its streaming replicas) and PgBouncer, made by the tests
themselves: each in a directory of its own, on a free loopback port, never the machine's own
PostgreSQL on 127.0.0.1:5432. The fixtures that use them are in conftest.py.

    with scratch_directory() as root, PostgresServer.primary(root / "primary") as primary:
        primary.start()
        with primary.replica(root / "replica") as replica:
            primary.execute("CREATE TABLE t (n int)")
            replica.wait_until_caught_up()

initdb and postgres refuse to run as root, so when the tests run as root every server
program runs as the `postgres` OS user, in directories that user owns (`scratch_directory`
makes one; pytest's tmp_path is not reachable by another user).
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from helpers import free_port

OS_USER = "postgres"  # who runs the servers when the tests run as root
SUPERUSER = "postgres"  # the database superuser initdb makes


# --- Finding the programs, running them -------------------------------------------------

def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb, or None."""
    versions = [path for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
                if path.parent.parent.name.isdigit()]
    if not versions:
        return None
    return max(versions, key=lambda path: int(path.parent.parent.name)).parent


def pgbouncer_program() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


def require(program: str) -> None:
    """Skip the test (or, with CI set, fail it) when `program` ("postgres" or "pgbouncer")
    is not installed, as fresh_postgres_database does for an unreachable server."""
    found = postgres_bin() if program == "postgres" else pgbouncer_program()
    if found is None:
        message = f"{program} is not installed: no replica or pooler tests"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _as_root() -> bool:
    return os.geteuid() == 0


def _give_to_os_user(path: Path) -> None:
    if _as_root():
        shutil.chown(path, OS_USER, OS_USER)


def _run(command: list[str], cwd: Path, timeout: float = 120) -> str:
    """Run a server program as the OS user; its output, or an error that includes it."""
    if _as_root():
        command = ["runuser", "-u", OS_USER, "--", *command]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n"
                           f"{done.stdout}{done.stderr}")
    return done.stdout


@contextmanager
def scratch_directory(prefix: str = "clusters-") -> Iterator[Path]:
    """A new empty directory the servers' OS user owns; removed with all it holds at exit."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        _give_to_os_user(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _make_directory(directory: Path) -> None:
    directory.mkdir(parents=True)
    _give_to_os_user(directory)


def wait_for(check, timeout: float, what: str, interval: float = 0.05) -> None:
    """Call check() until it returns true; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


# --- PostgreSQL -------------------------------------------------------------------------

class PostgresServer:
    """A PostgreSQL server in `directory`: its data in data/, its log in postgres.log, its
    unix socket in the directory itself, TCP on 127.0.0.1:`port` with trust auth for
    everyone (replication too). A context manager: `destroy()` at exit."""

    def __init__(self, directory: Path, port: int, upstream: "PostgresServer | None" = None,
                 application_name: str | None = None, apply_delay: str | None = None) -> None:
        self.directory = directory
        self.data_dir = directory / "data"
        self.log_file = directory / "postgres.log"
        self.port = port
        self.upstream = upstream  # a replica's primary; None for a primary
        self.application_name = application_name  # a replica's, in pg_stat_replication
        self.apply_delay = apply_delay
        self.bin = postgres_bin()
        assert self.bin is not None, "PostgreSQL is not installed (call require('postgres'))"

    @classmethod
    def primary(cls, directory: Path) -> "PostgresServer":
        """A new cluster (initdb) in `directory`, which must not exist yet. Not started:
        call start()."""
        _make_directory(directory)
        server = cls(directory, free_port())
        server._pg("initdb", "--pgdata", str(server.data_dir), "--username", SUPERUSER,
                   "--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync",
                   "--no-instructions")
        (server.data_dir / "pg_hba.conf").write_text(
            "local all         all              trust\n"
            "host  all         all 127.0.0.1/32 trust\n"
            "local replication all              trust\n"
            "host  replication all 127.0.0.1/32 trust\n")
        server._configure(
            wal_level="replica",
            max_wal_senders=10,
            max_replication_slots=10,
            # No slots (a dropped replica's slot would keep WAL for good): WAL enough for a
            # replica that was stopped for a while to catch up.
            wal_keep_size="256MB",
            hot_standby="on",
            # Replicas tell their replay position every second, not every 10 s.
            wal_receiver_status_interval="1s",
            fsync="off",
            shared_buffers="16MB",
            max_connections=100,
        )
        return server

    def replica(self, directory: Path, apply_delay: str | None = None,
                application_name: str | None = None) -> "PostgresServer":
        """A streaming replica of this (running) primary in `directory`, which must not exist
        yet: `pg_basebackup -R -X stream`, on a free port of its own, started. With
        `apply_delay` ('3s'), it applies each transaction that long after its commit on the
        primary (recovery_min_apply_delay). `application_name` (by default
        replica_<port>) is its name in the primary's pg_stat_replication."""
        assert self.upstream is None, "a replica of a replica is not supported here"
        _make_directory(directory)
        port = free_port()
        name = application_name or f"replica_{port}"
        replica = PostgresServer(directory, port, upstream=self, application_name=name,
                                 apply_delay=apply_delay)
        # -R writes primary_conninfo from this connection string, application_name included.
        replica._pg("pg_basebackup", "--pgdata", str(replica.data_dir), "--write-recovery-conf",
                    "--wal-method", "stream", "--checkpoint", "fast", "--no-sync",
                    "--dbname", f"host=127.0.0.1 port={self.port} user={SUPERUSER} "
                                f"application_name={name}")
        # postgresql.conf came with the backup, the primary's port and socket included.
        replica._configure(**({"recovery_min_apply_delay": apply_delay} if apply_delay else {}))
        try:
            replica.start()
        except BaseException:
            replica.destroy()
            raise
        return replica

    def _pg(self, program: str, *args: str, timeout: float = 120) -> str:
        return _run([str(self.bin / program), *args], cwd=self.directory, timeout=timeout)

    def _configure(self, **settings) -> None:
        """Append settings to postgresql.conf (a later line wins over an earlier one), with
        this server's own port and socket directory."""
        settings = {"listen_addresses": "127.0.0.1", "port": self.port,
                    "unix_socket_directories": str(self.directory), **settings}
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/clusters.py\n")
            for name, value in settings.items():
                conf.write(f"{name} = '{value}'\n")

    # Running it.

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def start(self) -> None:
        """Start it and wait until it accepts connections (a replica: read-only ones)."""
        if not self.running:
            self._pg("pg_ctl", "start", "--pgdata", str(self.data_dir), "--wait",
                     "--timeout", "60", "--log", str(self.log_file))

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: mode "smart", "fast" or "immediate"."""
        if self.running:
            self._pg("pg_ctl", "stop", "--pgdata", str(self.data_dir), "--wait",
                     "--timeout", "60", "--mode", mode)

    def destroy(self) -> None:
        """Stop it if it runs, and remove its directory."""
        try:
            try:
                self.stop("fast")
            except (RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        return self

    def __exit__(self, *_exc) -> None:
        self.destroy()

    # Using it.

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL, as the superuser over TCP."""
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, params=None, database: str = "postgres") -> list[tuple]:
        """Run one statement (autocommit); its rows, or [] for a statement without any."""
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                             dbname=database, autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def wait_until_caught_up(self, timeout: float = 10) -> None:
        """Wait until this replica has replayed all the WAL its primary had written when
        called. On a replica with an apply delay that takes the delay at least."""
        assert self.upstream is not None, "wait_until_caught_up is for a replica"
        [(target,)] = self.upstream.execute("SELECT pg_current_wal_lsn()")
        wait_for(lambda: self.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                   [target])[0][0],
              timeout, f"replica on port {self.port} catching up to {target}")

    def __repr__(self) -> str:
        role = "replica" if self.upstream else "primary"
        return f"<PostgresServer {role} 127.0.0.1:{self.port} {self.directory}>"


# --- PgBouncer --------------------------------------------------------------------------

class PgBouncer:
    """PgBouncer on 127.0.0.1:`port` in front of one PostgresServer, for every database.
    Its admin console is the database `pgbouncer` (`admin()`). A context manager: `stop()`
    and its directory removed at exit.

    In transaction pooling a server connection serves another client after each
    transaction, so nothing a session sets lasts: with psycopg, turn its automatic prepared
    statements off (connect_args={"prepare_threshold": None}) when a test needs that."""

    def __init__(self, directory: Path, server: PostgresServer, port: int,
                 process: subprocess.Popen) -> None:
        self.directory = directory
        self.server = server
        self.port = port
        self.process = process

    @classmethod
    def start(cls, directory: Path, server: PostgresServer, pool_mode: str = "transaction",
              pool_size: int = 5) -> "PgBouncer":
        """Start it in `directory`, which must not exist yet; return once it accepts
        connections. `pool_size` server connections at most per database and user."""
        program = pgbouncer_program()
        assert program is not None, "PgBouncer is not installed (call require('pgbouncer'))"
        _make_directory(directory)
        port = free_port()
        (directory / "userlist.txt").write_text(f'"{SUPERUSER}" ""\n')
        config = directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server.port}\n"
            "\n[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            f"unix_socket_dir = {directory}\n"
            f"logfile = {directory / 'pgbouncer.log'}\n"
            "auth_type = trust\n"
            f"auth_file = {directory / 'userlist.txt'}\n"
            f"admin_users = {SUPERUSER}\n"
            f"pool_mode = {pool_mode}\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            # ignore_startup_parameters is left at its default on purpose: a client that
            # sends `options` (e.g. '-c timezone=UTC') in its startup packet is refused, as
            # production's PgBouncer would refuse it. The app must not rely on startup
            # options; in transaction pooling they would not stick to a server connection.
        )
        for path in directory.iterdir():
            _give_to_os_user(path)
        # pgbouncer switches to the user itself (-u); it stays in the foreground, our child.
        command = [program, *(["-u", OS_USER] if _as_root() else []), str(config)]
        process = subprocess.Popen(command, cwd=directory, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bouncer = cls(directory, server, port, process)
        try:
            wait_for(bouncer._answers, 30, f"pgbouncer on port {port} accepting connections")
        except BaseException:
            bouncer.stop()
            raise
        return bouncer

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            log = self.directory / "pgbouncer.log"
            raise RuntimeError(f"pgbouncer exited {self.process.returncode}:\n"
                               f"{log.read_text() if log.exists() else ''}")
        try:
            self.admin("SHOW VERSION")
        except psycopg.OperationalError:
            return False
        return True

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL through the pooler, as the superuser."""
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self, command: str) -> list[dict]:
        """A command of the admin console ("SHOW POOLS"): its rows, as dicts."""
        # The console speaks only the simple query protocol: hence a ClientCursor.
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                             dbname="pgbouncer", autocommit=True, connect_timeout=5,
                             cursor_factory=psycopg.ClientCursor) as conn:
            cursor = conn.execute(command)
            if not cursor.description:
                return []
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: immediate shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> "PgBouncer":
        return self

    def __exit__(self, *_exc) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<PgBouncer 127.0.0.1:{self.port} -> {self.server.port}>"
