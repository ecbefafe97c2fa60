"""gunicorn settings for `make run` and for production: `gunicorn -c gunicorn.conf.py wsgi:app`.
Environment: HOST, PORT, WEB_CONCURRENCY (workers)."""
import json
import multiprocessing
import os
import shutil
import tempfile

from gunicorn import util

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


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own errors, for requests it can't read (a bad request line: 400, a URI
    too long: 414, headers too large: 431), in the API's JSON form rather than HTML."""
    body = json.dumps({"code": status_int, "status": reason, "message": mesg}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


util.write_error = write_json_error  # what gunicorn's workers call to answer those
