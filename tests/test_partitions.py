"""Messages by month (migration 0010, messenger_app/partitions.py): every id lands in a
partition, `flask partitions` makes the months, `flask retention` drops whole months and
trims the one it cuts through, and a populated database is migrated in place."""
import re
import threading
import time
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from helpers import (SMS, alembic_config, fresh_database, make_key, migrated_database,
                     on_postgresql, row_counts, url)
from messenger_app import partitions, queries
from messenger_app.db import db
from messenger_app.partitions import is_partition
from messenger_app.queries import counted, read_message_statement

TODAY = datetime.now(UTC).date()


def object_id(made: datetime, serial: int) -> str:
    return f"{int(made.timestamp()):08x}{serial:016x}"


def month_suffix(day: date) -> str:
    return f"y{day:%Y}m{day:%m}"


def document(message_id: str) -> dict:
    """A mongoexport document with a child row in each child table."""
    return {"_id": {"$oid": message_id}, "event_time": {"$date": "2020-03-01T10:20:30.456Z"},
            "attachment_ids": ["att-1"], "organization": "acme",
            "sms_data": {"keys": "to", "values": "+15550100", "queryparam": False}}


def make_store(backend: str, tmp_path_factory, make_app, tmp_path):
    """An app on a database of its own (retention drops partitions), its CLI runner, an
    all-organizations key, and `load(ids)`: import-mongo of a message for each id."""
    app = make_app({"DATABASE_URL": migrated_database(backend, tmp_path_factory, "partitions"),
                    "TESTING": True})

    def load(*ids: str) -> None:
        path = tmp_path / "dump.json"
        path.write_bytes(b"\n".join(orjson.dumps(document(each)) for each in ids))
        result = app.test_cli_runner().invoke(args=["import-mongo", str(path)])
        assert result.exit_code == 0, result.output

    return backend, app, app.test_cli_runner(), make_key(app, None), load


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path_factory, make_app, tmp_path):
    return make_store(request.param, tmp_path_factory, make_app, tmp_path)


@pytest.fixture
def partitioned(tmp_path_factory, make_app, tmp_path):
    """`store` on PostgreSQL, which partitions."""
    return make_store("postgresql", tmp_path_factory, make_app, tmp_path)


def run(runner, *args):
    return runner.invoke(args=list(args))


def partition_of(app, table: str, key: str, value: str) -> str:
    with app.app_context(), db.engine.connect() as connection:
        return connection.execute(text(
            f"SELECT tableoid::regclass::text FROM {table} WHERE {key} = :value"),
            {"value": value}).scalar_one()


def partition_names(app) -> set[str]:
    with app.app_context(), db.engine.connect() as connection:
        return {name for (name,) in connection.execute(text(
            "SELECT relname FROM pg_class WHERE relkind = 'r'")) if is_partition(name)}


def stored(app, headers: dict, message_id: str) -> dict:
    response = app.test_client().get(url(message_id), headers=headers)
    assert response.status_code == 200
    return response.get_json()


def test_every_id_lands_somewhere_and_partitions_give_each_month_its_own(partitioned):
    _backend, app, runner, admin, load = partitioned
    old, ahead = object_id(datetime(2019, 6, 10, tzinfo=UTC), 1), object_id(
        datetime.now(UTC) + timedelta(days=400), 2)
    load(old, ahead)
    new = app.test_client().post(SMS, json={"attachment_ids": ["a"]}, headers=admin).get_json()
    before = {message_id: stored(app, admin, message_id) for message_id in (old, ahead, new["id"])}

    assert partition_of(app, "messages", "id", old) == "messages_default"
    assert partition_of(app, "message_attachments", "message_id", ahead) == (
        "message_attachments_default")
    assert partition_of(app, "messages", "id", new["id"]) == f"messages_{month_suffix(TODAY)}"

    made = run(runner, "partitions")
    later = (datetime.now(UTC) + timedelta(days=400)).date()
    assert made.exit_code == 0 and "2019-06" in made.output and f"{later:%Y-%m}" in made.output
    for message_id, made_on in ((old, date(2019, 6, 1)), (ahead, later)):
        suffix = month_suffix(made_on)
        assert partition_of(app, "messages", "id", message_id) == f"messages_{suffix}"
        assert partition_of(app, "message_attachments", "message_id", message_id) == (
            f"message_attachments_{suffix}")
        assert partition_of(app, "message_key_values", "message_id", message_id) == (
            f"message_key_values_{suffix}")
        assert stored(app, admin, message_id) == before[message_id]
    again = run(runner, "partitions")
    assert again.exit_code == 0 and "already" in again.output


CHILD_KEYS = text(
    "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text, c.confdeltype,"
    " c.convalidated FROM pg_constraint c JOIN pg_inherits i ON i.inhrelid = c.conrelid"
    " WHERE c.contype = 'f' AND i.inhparent IN ('message_attachments'::regclass,"
    " 'message_key_values'::regclass)")


def test_each_child_partition_refers_to_the_messages_partition_of_its_month(partitioned):
    """Migration 0012: the keys are the partitions' own (PostgreSQL checks each with one
    index probe), in every month that `flask partitions` makes, rows moved in included;
    they refuse an orphan and cascade a delete as the parents' did."""
    _backend, app, runner, _admin, load = partitioned
    old = object_id(datetime(2019, 6, 10, tzinfo=UTC), 1)
    load(old)  # into the default partitions; then moved into 2019-06's
    assert run(runner, "partitions").exit_code == 0

    with app.app_context(), db.engine.connect() as connection:
        keys = connection.execute(CHILD_KEYS).all()
    suffixes = {name.removeprefix("messages_") for name in partition_names(app)
                if name.startswith("messages_")}
    assert {"default", month_suffix(date(2019, 6, 1)), month_suffix(TODAY)} <= suffixes
    assert sorted(keys) == sorted((f"{child}_{suffix}", f"messages_{suffix}", "c", True)
                                  for child in partitions.CHILDREN for suffix in suffixes)

    orphan = object_id(datetime(2019, 6, 11, tzinfo=UTC), 9)
    with app.app_context(), pytest.raises(IntegrityError), db.engine.begin() as connection:
        connection.execute(text("INSERT INTO message_attachments VALUES (:id, 5, 'x')"),
                           {"id": orphan})
    assert row_counts(app) == (1, 1, 1)
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(text("DELETE FROM messages WHERE id = :id"), {"id": old})
    assert row_counts(app) == (0, 0, 0)


def test_partitions_are_made_ahead_of_the_clock(store):
    backend, app, runner, _admin, _load = store
    if not on_postgresql(backend):
        assert run(runner, "partitions").output.startswith("Nothing to do")
        return
    month, months = TODAY.replace(day=1), []
    for _ in range(8):
        months.append(month_suffix(month))
        month = (month + timedelta(days=32)).replace(day=1)
    assert {f"messages_{m}" for m in months[:4]} <= partition_names(app)
    assert f"messages_{months[5]}" not in partition_names(app)

    result = run(runner, "partitions", "--ahead", "6", "--since", "2025-11")

    assert result.exit_code == 0
    for table in ("messages", "message_attachments", "message_key_values"):
        assert {f"{table}_{m}" for m in months[:7]} <= partition_names(app)
        assert {f"{table}_y2025m11", f"{table}_y2025m12", f"{table}_y2026m01"} <= (
            partition_names(app))
        assert f"{table}_y2025m10" not in partition_names(app)
    assert run(runner, "partitions", "--since", "2025-13").exit_code == 2


def test_retention_drops_whole_months_and_trims_the_one_it_cuts(store):
    backend, app, runner, admin, load = store
    march, early_june, late_june = (object_id(datetime(2019, month, day, tzinfo=UTC), n)
                                    for n, (month, day) in enumerate([(3, 5), (6, 10), (6, 20)]))
    load(march, early_june, late_june)
    kept = app.test_client().post(SMS, json={"attachment_ids": ["a"]}, headers=admin).get_json()
    if on_postgresql(backend):
        assert run(runner, "partitions").exit_code == 0
    partitions_before, counts_before = partition_names(app) if on_postgresql(backend) else (
        set()), row_counts(app)

    dry = run(runner, "retention", "--before", "2019-06-15", "--dry-run")

    assert dry.exit_code == 0 and dry.output.endswith("Would remove 2 messages made before"
                                                      " 2019-06-15.\n")
    assert row_counts(app) == counts_before
    if on_postgresql(backend):
        assert partition_names(app) == partitions_before
        assert "would drop messages_y2019m03: 1 messages" in dry.output
        assert "would delete from messages_y2019m06: 1 messages" in dry.output

    removed = run(runner, "retention", "--before", "2019-06-15")

    assert removed.exit_code == 0, removed.output
    assert removed.output.endswith("Removed 2 messages made before 2019-06-15.\n")
    client = app.test_client()
    assert [client.get(url(each), headers=admin).status_code
            for each in (march, early_june, late_june, kept["id"])] == [404, 404, 200, 200]
    assert row_counts(app) == (2, 2, 1)  # messages, attachment ids, key/value objects
    if on_postgresql(backend):
        assert "dropped messages_y2019m03: 1 messages" in removed.output
        assert "deleted from messages_y2019m06: 1 messages" in removed.output
        assert partition_names(app) == partitions_before - {
            f"{table}_y2019m03" for table in ("messages", "message_attachments",
                                              "message_key_values")}
    else:
        assert "deleted from messages: 2 messages" in removed.output

    again = run(runner, "retention", "--before", "2019-06-15")
    assert again.exit_code == 0 and again.output == (
        "Removed 0 messages made before 2019-06-15.\n")
    assert row_counts(app) == (2, 2, 1)


@pytest.mark.parametrize("before", ["2019-13-01", "15/06/2019", "yesterday", "",
                                    f"{TODAY + timedelta(days=1)}", "9999-12-31"])
def test_retention_refuses_a_day_it_cannot_read_or_to_come(store, before):
    _backend, app, runner, admin, load = store
    load(object_id(datetime(2019, 3, 5, tzinfo=UTC), 1))
    counts = row_counts(app)

    result = run(runner, "retention", "--before", before)

    assert result.exit_code == 2 and "--before" in result.output
    assert row_counts(app) == counts


def test_retention_up_to_today_keeps_what_was_made_today(store):
    _backend, app, runner, admin, _load = store
    made = app.test_client().post(SMS, json={}, headers=admin).get_json()

    result = run(runner, "retention", "--before", f"{TODAY}")

    assert result.exit_code == 0 and result.output.endswith(f"Removed 0 messages made before"
                                                            f" {TODAY}.\n")
    assert stored(app, admin, made["id"]) == made


# --- A populated database migrated in place ---------------------------------------------

def test_a_populated_database_is_migrated_in_place(tmp_path_factory, make_app):
    """Messages made hourly from 2019-06-08 on, each with a child row in both tables."""
    url_ = fresh_database("postgresql", tmp_path_factory, "partitioned_in_place")
    config = alembic_config(url_)
    command.upgrade(config, "0009")
    engine = create_engine(url_)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO messages (id, event_time, organization)"
            " SELECT to_hex(1560000000 + n * 3600) || lpad(to_hex(n), 16, '0'), now(), 'acme'"
            " FROM generate_series(1, 2000) AS n"))
        connection.execute(text("INSERT INTO message_attachments SELECT id, 0, 'att' FROM messages"))
        connection.execute(text("INSERT INTO message_key_values (message_id, channel, ordinal,"
                                " keys_text) SELECT id, 'sms', 0, 'to' FROM messages"))
    engine.dispose()
    command.upgrade(config, "head")
    command.check(config)
    app = make_app({"DATABASE_URL": url_, "TESTING": True})
    admin = make_key(app, None)
    first = f"{1560003600:08x}{1:016x}"

    assert row_counts(app) == (2000, 2000, 2000)
    assert partition_of(app, "messages", "id", first) == "messages_legacy"
    assert partition_of(app, "message_key_values", "message_id", first) == (
        "message_key_values_legacy")
    assert stored(app, admin, first)["sms_data"] == {"keys": "to", "values": None,
                                                      "queryparam": False}
    with app.app_context(), db.engine.connect() as connection:
        bound = connection.scalar(text("SELECT pg_get_expr(relpartbound, oid) FROM pg_class"
                                       " WHERE relname = 'messages_legacy'"))
        reported = connection.scalar(text("SELECT count(*) FROM message_report"))
    next_month = (TODAY.replace(day=1) + timedelta(days=32)).replace(day=1)
    end = object_id(datetime(next_month.year, next_month.month, 1, tzinfo=UTC), 0)
    assert bound == f"FOR VALUES FROM (MINVALUE) TO ('{end}')" and reported == 2000
    created = app.test_client().post(SMS, json={"attachment_ids": ["a"]}, headers=admin)
    assert created.status_code == 201
    assert partition_of(app, "messages", "id", created.get_json()["id"]) == "messages_legacy"

    result = app.test_cli_runner().invoke(args=["retention", "--before", "2019-06-11"])

    # 2019-06-11 is 1560211200: the messages 1 to 58
    assert result.exit_code == 0 and "deleted from messages_legacy: 58 messages" in result.output
    assert row_counts(app) == (1943, 1943, 1942)
    command.downgrade(config, "0009")
    assert row_counts(app) == (1943, 1943, 1942)


# --- Partition pruning ----------------------------------------------------------------

def explain(app, statement, params: dict, options: str = "") -> list:
    """The rows of EXPLAIN `options` for `statement`, its parameters `params`."""
    with app.app_context(), db.engine.connect() as connection:
        compiled = statement.compile(dialect=connection.dialect,
                                     compile_kwargs={"literal_binds": True})
        sql = str(compiled)
        for name, value in params.items():
            sql = sql.replace(f"%({name})s", f"'{value}'")
        return connection.exec_driver_sql(f"EXPLAIN {options} {sql}").all()


def plan(app, statement, params: dict) -> str:
    return "\n".join(row[0] for row in explain(app, statement, params))


def test_reads_by_id_touch_only_the_partitions_their_ids_can_be_in(postgres_app):
    message_id = object_id(datetime.now(UTC), 7)
    one = plan(postgres_app, read_message_statement(False).params(message_id=message_id), {})
    assert set(re.findall(r"on (messages_\w+)", one)) == {f"messages_{month_suffix(TODAY)}"}

    in_two_months = (TODAY.replace(day=1) + timedelta(days=62)).replace(day=1)
    cursor = object_id(datetime(in_two_months.year, in_two_months.month, 2, tzinfo=UTC), 0)
    after = plan(postgres_app, counted({"id__gt": cursor}, "acme", 100), {})
    later = {f"messages_{month_suffix(in_two_months)}", "messages_default"}
    assert later <= set(re.findall(r"on (messages_\w+)", after)) <= later | {
        f"messages_{month_suffix((in_two_months + timedelta(days=32)).replace(day=1))}"}


def plan_nodes(node: dict):
    """The nodes of a JSON plan, but for InitPlans and CTEs (which run whatever the way)."""
    yield node
    for child in node.get("Plans", []):
        if child.get("Parent Relationship") != "InitPlan":
            yield from plan_nodes(child)


def branches_run(app, statement) -> set[str]:
    """Which of page_ids' two ways to a page ran: "narrow" (the range's rows, sorted) or
    "walk" (the id index, in order), by EXPLAIN ANALYZE."""
    tree = explain(app, statement, {}, "(ANALYZE, FORMAT JSON)")[0][0][0]["Plan"]
    ran = set()
    for node in plan_nodes(tree):
        if node["Actual Loops"] and node["Node Type"] == "CTE Scan":
            ran.add("narrow")
        elif node["Actual Loops"] and node.get("Alias", "").startswith("messages"):
            ran.add("walk")  # (the page's rows are read as `m`)
    return ran


@pytest.mark.parametrize("narrow_limit, way", [(queries.NARROW_LIMIT, "narrow"), (2, "walk")])
def test_a_time_range_in_id_order_reads_few_rows_through_its_index(postgres_app, monkeypatch,
                                                                   narrow_limit, way):
    """A day's messages, in the default order (by id): read through the creation_time index
    and sorted while the day holds no more than NARROW_LIMIT, through the id index past
    that; the same page either way."""
    monkeypatch.setattr(queries, "NARROW_LIMIT", narrow_limit)
    day = datetime(2001, 1, 1 + narrow_limit % 28, tzinfo=UTC)
    key = make_key(postgres_app, None)
    client = postgres_app.test_client()
    made = sorted(client.post(SMS, headers=key, json={
        "organization": "acme", "creation_time": f"{day:%Y-%m-%d}T0{hour}:00:00Z"}
    ).get_json()["id"] for hour in (3, 1, 2))
    filters = {"creation_time__gte": day, "creation_time__lt": day + timedelta(days=1)}

    page = client.get(SMS, headers=key, query_string={
        "creation_time__gte": f"{day:%Y-%m-%d}T00:00:00Z",
        "creation_time__lt": f"{day + timedelta(days=1):%Y-%m-%d}T00:00:00Z"}).get_json()
    ran = branches_run(postgres_app, queries.page_statement(
        filters, None, [("id", False)], 100, 0, None))

    assert [message["id"] for message in page] == made
    assert ran == {way}


def test_retention_drops_a_month_while_messages_are_written(partitioned):
    """Dropping a month locks messages for a moment, in the order writes take the tables:
    writes meanwhile wait, then go on; none fails, and none is lost."""
    _backend, app, runner, admin, load = partitioned
    load(*(object_id(datetime(2019, 3, 5, tzinfo=UTC), n) for n in range(50)))
    assert run(runner, "partitions").exit_code == 0
    stop, statuses = threading.Event(), []

    def write() -> None:
        client = app.test_client()
        while not stop.is_set():
            statuses.append(client.post(SMS, json={"attachment_ids": ["a"], "sms_data": {
                "keys": "k"}}, headers=admin).status_code)

    writers = [threading.Thread(target=write) for _ in range(3)]
    for writer in writers:
        writer.start()
    try:
        time.sleep(0.3)
        result = run(runner, "retention", "--before", "2019-04-01")
        time.sleep(0.3)
    finally:
        stop.set()
        for writer in writers:
            writer.join()

    assert result.exit_code == 0 and "dropped messages_y2019m03: 50 messages" in result.output
    assert statuses and set(statuses) == {201}
    assert row_counts(app) == (len(statuses),) * 3


def test_retention_gives_way_to_a_long_report_and_changes_nothing(partitioned, monkeypatch):
    """A report's open transaction keeps messages from being locked: retention tries a few
    times, a moment each, then fails saying so, with nothing removed; later it succeeds."""
    _backend, app, runner, _admin, load = partitioned
    load(object_id(datetime(2019, 3, 5, tzinfo=UTC), 1))
    assert run(runner, "partitions").exit_code == 0
    monkeypatch.setattr(partitions, "LOCK_ATTEMPTS", 3)
    with app.app_context():
        report = db.engine.connect()
    with report:
        report.exec_driver_sql("BEGIN")
        report.exec_driver_sql("SELECT count(*) FROM messages")
        busy = run(runner, "retention", "--before", "2019-04-01")
        counts = row_counts(app)
        report.exec_driver_sql("COMMIT")

    assert busy.exit_code == 1 and "stayed in use by others" in busy.output
    assert counts == (1, 1, 1) and "messages_y2019m03" in partition_names(app)
    done = run(runner, "retention", "--before", "2019-04-01")
    assert done.exit_code == 0 and "messages_y2019m03" not in partition_names(app)


def test_retention_removes_the_feeds_events_by_the_same_rule(store):
    """Events of the live-updates feed made before the day go too (the newest event is
    kept, so that the feed still tells an expired cursor from a current one)."""
    backend, app, runner, admin, _load = store
    with app.app_context(), db.engine.begin() as connection:
        for n, made in enumerate(["2019-03-05", "2019-03-06", "2019-06-20"]):
            connection.execute(text(
                "INSERT INTO message_events (xid, kind, message_id, created_at) VALUES"
                " (:xid, 'deleted', :id, :made)"),
                {"xid": n if on_postgresql(backend) else 0, "id": f"{n:024x}",
                 "made": datetime.fromisoformat(made).replace(tzinfo=UTC)})
    app.test_client().post(SMS, json={}, headers=admin)

    def events() -> int:
        with app.app_context(), db.engine.connect() as connection:
            return connection.scalar(text("SELECT count(*) FROM message_events"))

    dry = run(runner, "retention", "--before", "2019-04-01", "--dry-run")
    assert "would delete from message_events: 2 events" in dry.output and events() == 4
    removed = run(runner, "retention", "--before", "2019-04-01")
    assert "deleted from message_events: 2 events" in removed.output and events() == 2
    again = run(runner, "retention", "--before", "2019-04-01")
    assert "message_events" not in again.output and events() == 2
