"""gunicorn.conf.py: instances on one host keep out of each other's way."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import free_port, wait_until_serving
from messenger_app.config import PROJECT_ROOT


def start_gunicorn(home: Path, database_url: str) -> tuple[subprocess.Popen, int]:
    """gunicorn with gunicorn.conf.py, as `make run` starts it, on a free port; the user's
    home is `home` (where gunicorn keeps its control sockets: no XDG_RUNTIME_DIR here)."""
    port = free_port()
    env = {**os.environ, "HOME": str(home), "DATABASE_URL": database_url, "PORT": str(port),
           "WEB_CONCURRENCY": "1"}
    env.pop("XDG_RUNTIME_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                               "wsgi:app"], cwd=PROJECT_ROOT, env=env)
    wait_until_serving(f"http://127.0.0.1:{port}", server)
    return server, port


def control(socket: Path, command: str) -> dict:
    """`gunicornc -s SOCKET -c COMMAND`: its answer."""
    answer = subprocess.run([Path(sys.executable).parent / "gunicornc", "-s", socket, "-c",
                             command, "--json"], capture_output=True, text=True, timeout=10)
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)


def listening_on(socket: Path) -> list[str]:
    return [listener["address"] for listener in control(socket, "show listeners")["listeners"]]


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10  # gunicorn opens it once its workers have started
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_two_instances_on_one_host_each_have_their_own_control_socket(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'messenger.db'}"
    first, first_port = start_gunicorn(tmp_path, database_url)
    second, second_port = start_gunicorn(tmp_path, database_url)
    try:
        sockets = {server: tmp_path / ".gunicorn" / f"messenger-{server.pid}.ctl"
                   for server in (first, second)}
        for socket in sockets.values():
            wait_for(socket)
        assert listening_on(sockets[first]) == [f"http://127.0.0.1:{first_port}"]
        assert listening_on(sockets[second]) == [f"http://127.0.0.1:{second_port}"]

        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        assert not sockets[second].exists()
        assert listening_on(sockets[first]) == [f"http://127.0.0.1:{first_port}"]
        assert control(sockets[first], "show workers")["count"] == 1
    finally:
        for server in (first, second):
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
