"""gunicorn settings for `make run` and for production: `gunicorn -c gunicorn.conf.py wsgi:app`.
Environment: HOST, PORT, WEB_CONCURRENCY (workers)."""
import json
import multiprocessing
import os
import shutil
import signal
import tempfile

import gevent
from gevent import monkey
from gunicorn import util

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# gevent: a worker serves many connections at once, each a greenlet, so a client that
# sends its request slowly (or a live-updates stream) holds a greenlet, not the worker;
# psycopg waits for PostgreSQL cooperatively. A worker is one core at most (the GIL).
worker_class = "gevent"
worker_connections = 1000  # open connections a worker serves at once; more wait to be accepted
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
timeout = 30  # a worker stuck longer is replaced; statements give up after 10 s before that
graceful_timeout = 30  # on SIGTERM, requests under way get this long (streams end at once)
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


def post_worker_init(worker):
    """On SIGTERM, the worker's live-updates streams end at once (their clients resume after
    their last event, elsewhere): else they would hold the worker until graceful_timeout."""
    stop_accepting = signal.getsignal(signal.SIGTERM)
    feed = getattr(worker.wsgi, "extensions", {}).get("live_feed")

    def exit_and_end_streams(signum, frame):
        stop_accepting(signum, frame)
        if feed is not None and monkey.is_module_patched("threading"):
            gevent.spawn(feed.stop)  # a signal handler may not block (as gunicorn's own)
        elif feed is not None:
            feed.stop()

    signal.signal(signal.SIGTERM, exit_and_end_streams)


def on_exit(server):
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own errors, for requests it can't read (a bad request line: 400, a URI
    too long: 414, headers too large: 431), in the API's JSON form rather than HTML."""
    body = json.dumps({"code": status_int, "status": reason, "message": mesg}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


util.write_error = write_json_error  # what gunicorn's workers call to answer those


def control_socket_path() -> str:
    """gunicorn's control socket (for `gunicornc`) is one path per user unless told: a second
    instance on the host would take it over and delete it on exit. One per instance, then,
    named after its master's pid, where gunicorn would put its own (`--control-socket PATH`
    chooses another; `--no-control-socket`, none)."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
    directory = runtime_dir if os.path.isdir(runtime_dir) else os.path.expanduser("~/.gunicorn")
    return os.path.join(directory, f"messenger-{os.getpid()}.ctl")


control_socket = control_socket_path()  # this file is read by the master
