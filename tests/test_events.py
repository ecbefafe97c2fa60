"""Live updates through the Flask test client, on every backend: every write path writes
its event (and a rolled-back write, a replay or an import none), the JSON form (`after`,
`page_size`, `wait`, `Link`), Server-Sent Events (`Last-Event-ID`, `last_event_id`, the
present), organization scoping, filters, cursors that are not the feed's (422) or too old
(410). On PostgreSQL, writers that commit in the other order than they began. Real
gunicorn streams are in test_live.py."""
import itertools
import os
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text

from helpers import (EVENTS, SMS, assert_refused_from_now_on, create, feed, full_message,
                     make_key, read_server_sent_events, stream_lines, url)
from messenger_app import events, live, outbox, queries
from messenger_app.db import db
from messenger_app.listening import listen
from messenger_app.message_json import new_message
from messenger_app.models import new_object_id, utcnow


def sse(client, headers, query: str = "", **extra_headers):
    """An open Server-Sent Events stream and its lines."""
    response = client.get(f"{EVENTS}?{query}", buffered=False,
                          headers={**headers, "Accept": "text/event-stream", **extra_headers})
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "text/event-stream"
    return response, stream_lines(response)


def changes(events: list[dict]) -> list[tuple]:
    return [(event["event"], event["id"], event.get("message")) for event in events]


def test_every_write_path_writes_its_event_with_the_message_as_get_returns_it(client, admin):
    created = create(client, admin, full_message())
    form = client.post(SMS, data={"ref_id": "form", "msg_type": "2"}, headers=admin).get_json()
    put = client.put(url(created["id"]), json={"ref_id": "put"}, headers=admin).get_json()
    patched = client.patch(url(created["id"]), data={"attachment_ids": ["a", "b"]},
                           headers=admin).get_json()
    keyed = {**admin, "Idempotency-Key": "once"}
    replayed = [client.post(SMS, json={"ref_id": "keyed"}, headers=keyed) for _ in range(2)]
    assert client.delete(url(form["id"]), headers=admin).status_code == 204

    assert replayed[1].headers["Idempotent-Replayed"] == "true"
    assert changes(feed(client, admin)) == [
        ("created", created["id"], created), ("created", form["id"], form),
        ("updated", created["id"], put), ("updated", created["id"], patched),
        ("created", replayed[0].get_json()["id"], replayed[0].get_json()),
        ("deleted", form["id"], None)]
    assert client.get(url(created["id"]), headers=admin).get_json() == patched


def test_a_write_that_fails_writes_no_event(client, acme, failing_key_value_writes):
    message = create(client, acme)
    with failing_key_value_writes():
        assert client.post(SMS, json=full_message(), headers=acme).status_code == 500
        assert client.patch(url(message["id"]), json={"sms_data": {"keys": "k"}},
                            headers=acme).status_code == 500

    assert changes(feed(client, acme)) == [("created", message["id"], message)]


def test_an_import_writes_no_event(client, runner, acme, tmp_path):
    """A bulk load would flood every subscriber: clients list again after one."""
    dump = tmp_path / "dump.json"
    dump.write_text('{"_id": {"$oid": "5e5b8a000a1b2c3d4e000001"}, "organization": "acme", '
                    '"event_time": {"$date": "2020-03-01T10:20:30.456Z"}}\n')

    assert runner.invoke(args=["import-mongo", str(dump)]).exit_code == 0
    assert client.get(url("5e5b8a000a1b2c3d4e000001"), headers=acme).status_code == 200
    assert feed(client, acme) == []


def test_pages_follow_each_other_with_after_and_link(client, acme):
    made = [create(client, acme, {"ref_id": str(n)})["id"] for n in range(5)]

    first = client.get(f"{EVENTS}?page_size=2", headers=acme)
    seen, link = [event["id"] for event in first.get_json()], first.headers["Link"]
    while True:
        target = link[1:link.index(">")]
        page = client.get(target, headers=acme)
        if not page.get_json():
            break
        seen += [event["id"] for event in page.get_json()]
        link = page.headers["Link"]

    assert seen == made
    assert link.endswith('; rel="next"') and "page_size=2" in link
    every = feed(client, acme)
    assert [event["id"] for event in feed(client, acme, f"after={every[1]['event_id']}")] == \
        made[2:]
    assert every == sorted(every, key=lambda event: event["event_id"])  # increasing cursors


def test_wait_holds_an_empty_page_until_an_event_comes(app, client, acme):
    latest = create(client, acme)
    after = feed(client, acme)[-1]["event_id"]
    writer = threading.Timer(0.2, lambda: app.test_client().post(SMS, json={"ref_id": "new"},
                                                                  headers=acme))
    writer.start()

    page = feed(client, acme, f"after={after}&wait=30")
    writer.join()

    assert [event["message"]["ref_id"] for event in page] == ["new"]
    assert latest["id"] not in [event["id"] for event in page]


def test_an_organization_sees_its_changes_and_a_move_as_deleted_and_created(client, acme,
                                                                           globex, admin):
    ours = create(client, acme)
    theirs = create(client, globex)
    moved = client.patch(url(ours["id"]), json={"organization": "globex"},
                         headers=admin).get_json()

    assert changes(feed(client, acme)) == [("created", ours["id"], ours),
                                           ("deleted", ours["id"], None)]
    assert changes(feed(client, globex)) == [("created", theirs["id"], theirs),
                                             ("created", ours["id"], moved)]
    assert changes(feed(client, admin)) == [("created", ours["id"], ours),
                                            ("created", theirs["id"], theirs),
                                            ("updated", ours["id"], moved)]


def test_the_lists_filters_narrow_the_feed_and_a_deletion_passes_them(client, acme, admin):
    wanted = create(client, acme, {"ref_id": "ticket-42", "msg_type": 5})
    other = create(client, acme, {"ref_id": "ticket-43", "msg_type": 1})
    unwanted = client.patch(url(wanted["id"]), json={"ref_id": "ticket-44"},
                            headers=acme).get_json()
    client.delete(url(other["id"]), headers=acme)

    assert changes(feed(client, acme, "ref_id=ticket-42")) == [
        ("created", wanted["id"], wanted), ("deleted", other["id"], None)]
    assert changes(feed(client, acme, "msg_type__gte=2&ref_id=")) == [
        ("created", wanted["id"], wanted), ("updated", wanted["id"], unwanted),
        ("deleted", other["id"], None)]
    assert [event["id"] for event in feed(client, admin, "organization=globex")] == [other["id"]]
    assert feed(client, acme, f"id={wanted['id'].upper()}&is_deleted=no")[0]["id"] == wanted["id"]


def test_a_stream_starts_at_the_present_and_sends_each_change(app, client, acme, globex):
    before = create(client, acme)
    response, lines = sse(client, acme)
    try:
        create(client, globex)
        after = create(client, acme, {"ref_id": "after"})
        app.test_client().delete(url(before["id"]), headers=acme)

        events = read_server_sent_events(lines, 2)
    finally:
        response.close()

    assert [(event["event"], event["data"]) for event in events] == [
        ("created", {"id": after["id"], "message": after}), ("deleted", {"id": before["id"]})]
    assert events[0]["id"] < events[1]["id"]


@pytest.mark.parametrize("resume", ["header", "query", "both"])
def test_a_stream_resumes_after_the_last_event_id(client, acme, resume):
    made = [create(client, acme, {"ref_id": str(n)})["id"] for n in range(4)]
    cursors = [event["event_id"] for event in feed(client, acme)]
    given = {"header": ({"Last-Event-ID": cursors[1]}, ""),
             "query": ({}, f"last_event_id={cursors[1]}"),
             # EventSource reconnecting to a URL that had one: the header is the later
             "both": ({"Last-Event-ID": cursors[1]}, f"last_event_id={cursors[0]}")}[resume]
    response, lines = sse(client, acme, given[1], **given[0])
    try:
        events = read_server_sent_events(lines, 2)
    finally:
        response.close()

    assert [event["data"]["id"] for event in events] == made[2:]
    assert [event["id"] for event in events] == cursors[2:]


def test_a_stream_sends_a_comment_when_idle(app, client, acme, monkeypatch):
    monkeypatch.setitem(app.config, "EVENTS_HEARTBEAT_SECONDS", 0.05)
    response, lines = sse(client, acme)
    try:
        assert next(lines).startswith("retry: ")
        assert [next(lines), next(lines), next(lines)] == ["", ": keep-alive", ""]
    finally:
        response.close()


def test_a_quiet_organizations_stream_keeps_up_without_reading_the_table(app, client, acme,
                                                                         globex, monkeypatch):
    """Other organizations' events do not wake it, yet it moves past them when idle: however
    many go by (more than the feed keeps in memory), it never reads the table."""
    live_feed = app.extensions["live_feed"]
    monkeypatch.setitem(app.config, "EVENTS_HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(live_feed, "KEPT", 2)
    table_reads, read_matching = [], live.read_matching
    monkeypatch.setattr(live, "read_matching",
                        lambda *args: table_reads.append(args) or read_matching(*args))
    live_feed.start()
    response, lines = sse(client, acme)
    try:
        while next(lines) != ": keep-alive":  # following from the present
            pass
        table_reads.clear()  # (a start below what the feed keeps reads the table once)
        others = [create(client, globex)["id"] for _ in range(3 * live_feed.KEPT)]
        while others[-1] not in [change.event.message_id for change in live_feed.window.changes]:
            live_feed.wait(live_feed.signal(None), 1)
        heartbeats = 0
        while heartbeats < 2:  # at least one after the others' events were in memory
            heartbeats += next(lines) == ": keep-alive"
        made = create(client, acme)
        events = read_server_sent_events(lines, 1)
    finally:
        response.close()

    in_memory = [change.event.message_id for change in live_feed.window.changes]
    assert others[0] not in in_memory  # the others' first events have left memory
    assert [event["data"]["id"] for event in events] == [made["id"]]
    assert table_reads == []


def test_a_key_is_needed(client):
    response = client.get(EVENTS, headers={"Accept": "text/event-stream"})

    assert response.status_code == 401 and "WWW-Authenticate" in response.headers


def test_a_revoked_keys_stream_ends_before_its_next_event(app, client, runner, acme,
                                                          monkeypatch):
    """Its reconnection then gets a 401: a revoked key follows no more changes."""
    monkeypatch.setattr(events, "KEY_CHECK_SECONDS", 0)
    monkeypatch.setitem(app.config, "EVENTS_HEARTBEAT_SECONDS", 0.05)
    writer = make_key(app, "acme")
    response, lines = sse(client, acme)
    try:
        create(client, writer)
        assert len(read_server_sent_events(lines, 1)) == 1
        secret = acme["Authorization"].split()[1]
        assert runner.invoke(args=["api-key", "revoke", secret]).exit_code == 0
        assert_refused_from_now_on(client, acme)
        create(client, writer, {"ref_id": "after the revocation"})
        rest = list(itertools.islice(lines, 200))  # a stream left open sends heartbeats
    finally:
        response.close()

    assert len(rest) < 200  # it ended
    assert not [line for line in rest if line.startswith(("id:", "event:", "data:"))]
    assert client.get(EVENTS, headers={**acme, "Accept": "text/event-stream"}
                      ).status_code == 401


@pytest.mark.parametrize("where, name, request_args", [
    ("query", "after", {"query_string": {"after": "not-a-cursor"}}),
    ("query", "after", {"query_string": {"after": "0" * 31 + "G"}}),
    ("query", "last_event_id", {"query_string": {"last_event_id": "1"},
                                "headers": {"Accept": "text/event-stream"}}),
    ("headers", "Last-Event-ID", {"headers": {"Accept": "text/event-stream",
                                              "Last-Event-ID": "x" * 32}}),
    ("query", "wait", {"query_string": {"wait": "31"}}),
    ("query", "page_size", {"query_string": {"page_size": "0"}}),
])
def test_a_cursor_that_is_not_the_feeds_is_a_422_naming_it(client, acme, where, name,
                                                           request_args):
    response = client.get(EVENTS, headers={**acme, **request_args.get("headers", {})},
                          query_string=request_args.get("query_string"))

    assert response.status_code == 422
    assert list(response.get_json()["errors"][where]) == [name]


def test_a_cursor_older_than_the_events_kept_is_a_410(app, client, runner, acme, monkeypatch):
    for n in range(3):
        create(client, acme, {"ref_id": str(n)})
    cursors = [event["event_id"] for event in feed(client, acme)]
    monkeypatch.setitem(app.config, "EVENTS_RETENTION_DAYS", 0)

    purged = runner.invoke(args=["events", "purge"])

    assert purged.exit_code == 0 and "Deleted 2 events" in purged.output
    for request_args in ({"query_string": {"after": cursors[0]}},
                         {"headers": {"Last-Event-ID": cursors[1],
                                      "Accept": "text/event-stream"}}):
        headers = {**acme, **request_args.pop("headers", {})}
        response = client.get(EVENTS, headers=headers, **request_args)
        assert response.status_code == 410, response.get_json()
        assert response.get_json()["message"].startswith("This cursor is older")
    # The newest is kept, so its cursor tells it missed nothing.
    assert feed(client, acme, f"after={cursors[2]}") == []


def test_the_feed_is_kept_for_the_retention_days(app, client, runner, acme):
    create(client, acme)

    assert runner.invoke(args=["events", "purge"]).output.startswith("Deleted 0 events")
    assert len(feed(client, acme)) == 1


def test_a_write_notifies_the_feeds_after_it_commits(postgres_app):
    """The NOTIFY that wakes every process's feed comes from the writing process, once the
    write has committed (live.Notifier), not from the write's own transaction."""
    listener = listen(postgres_app.config["DATABASE_URL"], live.CHANNEL, 5)
    try:
        create(postgres_app.test_client(), make_key(postgres_app, "acme"))
        notified = [notice.channel for notice in listener.notifies(timeout=10, stop_after=1)]
    finally:
        listener.close()

    assert notified == [live.CHANNEL]


# --- Concurrent writers (PostgreSQL) -----------------------------------------------------

def write_held_open(app, headers: dict, started: threading.Event, finish: threading.Event):
    """Create a message in a transaction that stays open until `finish` (as a write with an
    Idempotency-Key, or a slow one, does): its transaction id is the older."""
    message = {}

    def run():
        with app.test_request_context(SMS, method="POST", headers=headers):
            with db.write():
                db.atomic()
                message.update(new_message({"organization": "acme"}, utcnow(),
                                           new_object_id()))
                queries.insert_message(message)
                started.set()
                finish.wait(30)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, message


def test_writers_that_commit_out_of_order_are_delivered_once_in_one_order(postgres_app):
    """The first writer begins (its transaction id is older) and waits; the second commits;
    nobody is given the second's event yet, since the first's would then sort before an
    event already delivered. Once the first commits, a stream that was open all along, a
    client resuming from before both and one reading everything get both, once, in the
    same order."""
    client, acme = postgres_app.test_client(), make_key(postgres_app, "acme")
    with postgres_app.app_context(), db.engine.begin() as connection:
        connection.execute(text("DELETE FROM messages"))
        connection.execute(text("DELETE FROM message_events"))
    before = create(client, acme)
    cursor = feed(client, acme)[-1]["event_id"]
    response, lines = sse(client, acme, f"last_event_id={cursor}")
    started, finish = threading.Event(), threading.Event()
    try:
        first, message = write_held_open(postgres_app, acme, started, finish)
        assert started.wait(30)
        second = create(client, acme, {"ref_id": "second"})

        assert feed(client, acme, f"after={cursor}") == []  # the second's is held back
        finish.set()
        first.join()
        streamed = read_server_sent_events(lines, 2)
    finally:
        finish.set()
        response.close()

    resumed = feed(client, acme, f"after={cursor}")
    everything = feed(client, acme)
    assert [event["id"] for event in resumed] == [message["id"], second["id"]]
    assert [event["data"]["id"] for event in streamed] == [message["id"], second["id"]]
    assert [event["id"] for event in streamed] == [event["event_id"] for event in resumed]
    assert everything == [feed(client, acme)[0], *resumed] and everything[0]["id"] == before["id"]


def test_two_moves_at_once_tell_each_organization_its_message_left(postgres_app):
    """A moves the message from acme to globex and holds its transaction open; B, begun
    meanwhile, moves it on to initech and waits for A's lock. Once A commits, globex's keys
    see it arrive (A) and leave (B): B's event names globex as where it came from, not the
    acme of the snapshot it began with."""
    client, admin = postgres_app.test_client(), make_key(postgres_app, None)
    globex = make_key(postgres_app, "globex")
    message = create(client, admin, {"organization": "acme"})
    started, finish = threading.Event(), threading.Event()

    def move_held_open():
        with postgres_app.test_request_context(url(message["id"]), method="PATCH",
                                               headers=admin):
            with db.write():
                db.atomic()  # the move's transaction, held open
                queries.update_message(message["id"], {"organization": "globex"}, None)
                started.set()
                finish.wait(30)

    first = threading.Thread(target=move_held_open)
    first.start()
    try:
        assert started.wait(30)
        moved_on = {}
        second = threading.Thread(target=lambda: moved_on.update(response=client.patch(
            url(message["id"]), json={"organization": "initech"}, headers=admin)))
        second.start()
        deadline = time.monotonic() + 30
        with postgres_app.app_context(), db.engine.connect() as connection:
            while not connection.scalar(text(  # B waits for A's row lock
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()")):
                assert time.monotonic() < deadline, "the second move never waited"
                time.sleep(0.01)
    finally:
        finish.set()
        first.join()
    second.join()

    assert moved_on["response"].status_code == 200
    assert [(event["event"], event["id"]) for event in feed(client, globex)] == [
        ("created", message["id"]), ("deleted", message["id"])]


@pytest.fixture
def plain_role(postgres_app) -> Iterator[str]:
    """A login role of the tests' server without superuser or pg_read_all_stats, which may
    read message_events in postgres_app's database: its URL. Dropped after."""
    name = f"messenger_plain_{os.getpid()}"
    url = make_url(postgres_app.config["DATABASE_URL"])
    with postgres_app.app_context(), db.engine.connect() as connection:
        connection.execute(text(f"CREATE ROLE {name} LOGIN"))
        connection.execute(text(f"GRANT SELECT ON message_events TO {name}"))
    try:
        yield url.set(username=name).render_as_string(hide_password=False)
    finally:
        with postgres_app.app_context(), db.engine.connect() as connection:
            connection.execute(text(f"DROP OWNED BY {name}"))
            connection.execute(text(f"DROP ROLE {name}"))


@pytest.mark.parametrize("role", ["superuser", "plain"])
def test_another_databases_transaction_holds_no_event_back(postgres_app, plain_role, role):
    """Transaction ids are the server's: one that began in another database before an
    event's, and is still running, can't write events here, so the event is delivered,
    also to a role that sees other roles' sessions only in part (pg_stat_activity)."""
    client, acme = postgres_app.test_client(), make_key(postgres_app, "acme")
    server = make_url(postgres_app.config["DATABASE_URL"])
    elsewhere = psycopg.connect(server.set(drivername="postgresql", database="postgres")
                                .render_as_string(hide_password=False))
    try:
        elsewhere.execute("SELECT pg_current_xact_id()")  # an older transaction, left open
        made = create(client, acme)
        reader = create_engine(plain_role if role == "plain" else server)
        with reader.connect() as connection:
            events, held = outbox.read_after(connection, outbox.ORIGIN, None, 1000)
        reader.dispose()
    finally:
        elsewhere.close()

    assert made["id"] in [event.message_id for event in events] and not held
