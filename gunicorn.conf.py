"""gunicorn settings for `make run` and for production: `gunicorn -c gunicorn.conf.py wsgi:app`.
Environment: HOST, PORT, WEB_CONCURRENCY (workers)."""
import multiprocessing
import os
import shutil
import tempfile

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = "sync"  # each worker holds one database connection (and one LISTEN connection)
timeout = 30  # a worker stuck longer is replaced; statements give up after 10 s before that
graceful_timeout = 30  # on SIGTERM, requests under way get this long to finish
keepalive = 2
accesslog = None  # the app logs every request itself, with its request id (logs.py)
errorlog = "-"
loglevel = "info"

# Metrics (messenger_app/metrics.py): each worker writes its samples to files in this
# directory, and /metrics adds up every worker's. A fresh one each start, so that no count
# from an earlier run is added in; set before the workers import prometheus_client.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="messenger-metrics-")


def child_exit(server, worker):
    """A dead worker's connections no longer count (its request counts still do)."""
    from prometheus_client import multiprocess  # here: it picks its mode when imported

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def control_socket_path() -> str:
    """gunicorn's control socket (for `gunicornc`) is one path per user unless told: a second
    instance on the host would take it over and delete it on exit. One per instance, then,
    named after its master's pid, where gunicorn would put its own (`--control-socket PATH`
    chooses another; `--no-control-socket`, none)."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
    directory = runtime_dir if os.path.isdir(runtime_dir) else os.path.expanduser("~/.gunicorn")
    return os.path.join(directory, f"messenger-{os.getpid()}.ctl")


control_socket = control_socket_path()  # this file is read by the master
