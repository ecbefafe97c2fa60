"""/metrics: Prometheus text format, open without a key, off with METRICS=false. Counts and
latency histograms move with requests, labelled by route (never by a path with an id),
through the test client and summed over the workers of a real gunicorn."""
import os
import time
import urllib.request
from pathlib import Path
from signal import SIGKILL

from prometheus_client.parser import text_string_to_metric_families

from helpers import SMS, at_once, create, http, make_key, url, wait_until_serving
from messenger_app.db import db

LIST = ("/ux/common/messenger/sms/", "GET", "200")
ITEM_RULE = "/ux/common/messenger/sms/<objectid:message_id>/"


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, endpoint, method, status): value} of the messenger_ metrics (for
    histogram buckets, the `le` bound follows)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("messenger_"):
                labels = sample.labels
                key = (sample.name, labels.get("endpoint"), labels.get("method"),
                       labels.get("status"), *([labels["le"]] if "le" in labels else []))
                found[key] = sample.value
    return found


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


def moved(before: dict, after: dict) -> dict:
    return {key: after[key] - before.get(key, 0) for key in after
            if after[key] != before.get(key, 0)}


def test_requests_move_their_counts_and_histogram_buckets(client, acme):
    created = create(client, acme)
    before = scrape(client)  # open without a key

    client.get(SMS, headers=acme)
    client.get(SMS, headers=acme)
    client.get(url(created["id"]), headers=acme)
    client.get(url("0" * 24), headers=acme)
    client.get(SMS)

    change = moved(before, scrape(client))
    assert change[("messenger_http_requests_total", *LIST)] == 2
    assert change[("messenger_http_request_duration_seconds_count", *LIST)] == 2
    assert change[("messenger_http_request_duration_seconds_bucket", *LIST, "+Inf")] == 2
    assert change[("messenger_http_request_duration_seconds_sum", *LIST)] > 0
    for status in ("200", "404"):
        assert change[("messenger_http_requests_total", ITEM_RULE, "GET", status)] == 1
    assert change[("messenger_http_requests_total", LIST[0], "GET", "401")] == 1
    assert not any(created["id"] in str(key) or "0" * 24 in str(key) for key in change)


def test_unknown_urls_and_methods_share_one_label(client):
    before = scrape(client)

    client.get("/nowhere/1")
    client.get("/nowhere/2")
    client.open("/healthz", method="BREW")

    change = moved(before, scrape(client))
    assert change[("messenger_http_requests_total", "unmatched", "GET", "404")] == 2
    assert change[("messenger_http_requests_total", "unmatched", "other", "405")] == 1


def test_database_connections_are_counted(app, client, acme):
    client.get(SMS, headers=acme)  # its connection went back to the pool, open
    after_the_request = scrape(client)
    with app.app_context():
        held = db.engine.connect()  # as a request under way holds one
    while_held = scrape(client)
    held.close()

    assert after_the_request[("messenger_db_connections_open", None, None, None)] >= 1
    assert after_the_request[("messenger_db_connections_in_use", None, None, None)] == 0
    assert while_held[("messenger_db_connections_in_use", None, None, None)] == 1


def test_metrics_can_be_turned_off(database_url, client, acme, make_app):
    quiet = make_app({"DATABASE_URL": database_url, "METRICS": False}).test_client()
    before = scrape(client)

    response = quiet.get("/metrics")
    quiet.get(SMS, headers=acme)

    assert response.status_code == 404
    assert response.get_json() == quiet.get("/nowhere").get_json()  # as if there were none
    # Of the request series, only the scrapes moved. (The pool gauges are left out: they
    # are per process, and any app's connections, closed whenever garbage is collected,
    # can move them in between.)
    requests = {key[1] for key in moved(before, scrape(client))
                if key[0].startswith("messenger_http_")}
    assert requests == {"/metrics"}


def scrape_service(base: str) -> dict[tuple, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        return samples(response.read().decode())


def worker_pids(server) -> list[int]:
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def test_gunicorn_workers_add_up_and_dead_workers_drop_out(service):
    acme = make_key(service.app, "acme")
    before = scrape_service(service.base)
    statuses = sum(at_once(6, lambda _: [
        http("GET", f"{service.base}{SMS}", acme)[0] for _ in range(10)]), [])
    served = scrape_service(service.base)

    assert statuses == [200] * 60
    change = moved(before, served)
    assert change[("messenger_http_requests_total", *LIST)] == 60  # whichever workers served
    assert change[("messenger_http_request_duration_seconds_bucket", *LIST, "+Inf")] == 60
    assert served[("messenger_db_connections_open", None, None, None)] >= 1
    assert served[("messenger_db_connections_in_use", None, None, None)] == 0  # all given back

    # gunicorn replaces killed workers; child_exit drops their connections, not their counts
    old = worker_pids(service.process)
    for pid in old:
        os.kill(pid, SIGKILL)
    deadline = time.monotonic() + 30
    while set(worker_pids(service.process)) & set(old) or len(worker_pids(service.process)) < 3:
        assert time.monotonic() < deadline, "gunicorn did not replace its workers"
        time.sleep(0.1)
    wait_until_serving(service.base, service.process)
    after = scrape_service(service.base)

    assert after[("messenger_http_requests_total", *LIST)] == served[
        ("messenger_http_requests_total", *LIST)]
    assert after[("messenger_db_connections_in_use", None, None, None)] == 0
    assert after[("messenger_db_connections_open", None, None, None)] == 0
