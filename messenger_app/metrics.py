"""Prometheus metrics at /metrics, open without a key: the requests answered and their
latency, by endpoint, method and status, and the database connections of the pool
(METRICS=false: /metrics is a 404, and nothing is counted). Under gunicorn every worker
writes its samples to files in PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py sets it) and
/metrics adds them up, whichever worker answers the scrape."""
import functools
import os

from flask import Flask, Response, current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event

from .api import ErrorSchema, abort
from .db import db
from .logs import elapsed_seconds

disable_created_metrics()  # no `_created` series: one sample fewer for every count

# Labels take bounded values only: the route (its rule, never the path with an id in it), a
# known method, the status.
LABELS = ("endpoint", "method", "status")
UNMATCHED = "unmatched"  # no route: 404 and 405 of unknown URLs and methods
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter("messenger_http_requests", "Requests answered.", LABELS)
LATENCY = Histogram(
    "messenger_http_request_duration_seconds", "Time from a request's start to its answer.",
    LABELS, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
# Summed over the live workers: a dead worker's connections are no longer counted.
DB_CONNECTIONS_OPEN = Gauge("messenger_db_connections_open",
                            "Database connections open in the pool.",
                            multiprocess_mode="livesum")
DB_CONNECTIONS_IN_USE = Gauge("messenger_db_connections_in_use",
                              "Database connections checked out of the pool (by requests "
                              "under way).", multiprocess_mode="livesum")
# Reads (GET one, lists) by where they ran: "primary" or a replica (host:port/database).
DB_READS = Counter("messenger_db_reads", "Reads run, by target.", ["target"])
# Each replica as the process that serves the scrape last saw it (every process checks).
REPLICA_UP = Gauge("messenger_db_replica_up", "1 if the replica serves reads, else 0.",
                   ["replica"], multiprocess_mode="livemostrecent")
REPLICA_LAG = Gauge("messenger_db_replica_lag_seconds",
                    "How far behind the primary the replica was at its last check.",
                    ["replica"], multiprocess_mode="livemostrecent")

blp = Blueprint("metrics", __name__, description="Prometheus metrics.")


def init_app(app: Flask, engine) -> None:
    """Count the app's requests and its engine's connections, and serve /metrics."""
    app.after_request(record_request)
    event.listen(engine, "connect", lambda *_: DB_CONNECTIONS_OPEN.inc())
    event.listen(engine, "close", lambda *_: DB_CONNECTIONS_OPEN.dec())
    event.listen(engine, "checkout", lambda *_: DB_CONNECTIONS_IN_USE.inc())
    event.listen(engine, "checkin", lambda *_: DB_CONNECTIONS_IN_USE.dec())


def record_request(response):
    rule = request.url_rule
    count, latency = series(rule.rule if rule else UNMATCHED,
                            request.method if request.method in METHODS else "other",
                            response.status_code)
    count.inc()
    latency.observe(elapsed_seconds())
    target = db.read_target()
    if target is not None:
        DB_READS.labels(target).inc()
    return response


@functools.cache  # finding a series by its labels costs more than counting in it
def series(endpoint: str, method: str, status: int):
    return REQUESTS.labels(endpoint, method, status), LATENCY.labels(endpoint, method, status)


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(security=[], operationId="metrics", responses={200: {
        "description": "The metrics, in Prometheus's text format.",
        "content": {"text/plain": {"schema": {"type": "string"}}}}})
    @blp.alt_response(404, schema=ErrorSchema, description="Metrics are off (METRICS=false).")
    def get(self):
        """Prometheus metrics: requests and latency by endpoint, method and status;
        database connections."""
        if not current_app.config["METRICS"]:
            abort(404)  # as any unknown URL
        for replica in db.replicas.status():
            REPLICA_UP.labels(replica["name"]).set(replica["state"] == "ok")
            REPLICA_LAG.labels(replica["name"]).set(
                float("nan") if replica["lag_seconds"] is None else replica["lag_seconds"])
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
