"""Lists (contract: "Lists"): pages, cursors, filters, ordering, and their cost in statements."""
import json
import re
import threading
from urllib.parse import parse_qsl, urlsplit

import pytest

from helpers import SMS, create
from messenger_app.db import db


def test_list_is_a_plain_array_in_creation_order(client, acme):
    """Oldest first by id (the order of creation), as the original listed its documents,
    whatever the creation_time a client gave."""
    first = create(client, acme, {"creation_time": "2025-01-01T00:00:00Z"})
    second = create(client, acme, {"creation_time": "2024-01-01T00:00:00Z"})
    third = create(client, acme, {"creation_time": "2024-06-01T00:00:00Z"})

    response = client.get(SMS, headers=acme)

    assert response.status_code == 200
    assert [m["id"] for m in response.get_json()] == [first["id"], second["id"], third["id"]]
    assert response.get_json()[0] == first


def test_list_pages(client, acme):
    ids = [create(client, acme)["id"] for _ in range(5)]

    pages = [client.get(f"{SMS}?page={n}&page_size=2", headers=acme) for n in (1, 2, 3, 4)]

    assert [[m["id"] for m in page.get_json()] for page in pages] == [
        ids[:2], ids[2:4], ids[4:], []
    ]
    # Counted (page 1), seen on the page where the list ends (3), counted past the end (4)
    assert [json.loads(page.headers["X-Pagination"])["total"] for page in pages] == [5] * 4
    assert len(client.get(SMS, headers=acme).get_json()) == 5


@pytest.mark.parametrize("query", ["page=0", "page=x", "page_size=0", "page_size=1001",
                                   "page_size=ten", "page=92233720368547759",
                                   "page=2147483648", "page=1e3"])
def test_bad_page_parameters_are_422_naming_them(client, acme, query):
    response = client.get(f"{SMS}?{query}", headers=acme)

    assert response.status_code == 422
    assert query.split("=")[0] in response.get_json()["errors"]["query"]


def test_the_last_page_number_there_can_be_is_an_empty_page(client, acme):
    create(client, acme)

    response = client.get(f"{SMS}?page=2147483647&page_size=1000", headers=acme)

    assert response.status_code == 200 and response.get_json() == []


def test_unknown_query_parameters_are_ignored(client, acme):
    create(client, acme)

    response = client.get(f"{SMS}?format=json&colour=red", headers=acme)

    assert response.status_code == 200 and len(response.get_json()) == 1


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [m["id"] for m in response.get_json()]


@pytest.fixture
def three(client, acme):
    """Three messages that differ in every filterable field; oldest first."""
    bodies = [
        {"ref_id": "r1", "msg_type": 1, "module_id": 10, "is_deleted": False,
         "creation_time": "2025-01-01T00:00:00Z", "last_update_time": "2025-01-05T00:00:00Z",
         "customer_id": "c1", "user_id": "u1"},
        {"ref_id": "r2", "msg_type": 2, "module_id": 30, "is_deleted": True,
         "creation_time": "2025-02-01T00:00:00Z", "last_update_time": "2025-02-01T12:00:00Z",
         "customer_id": "c1", "user_id": "u2"},
        {"ref_id": "r2", "msg_type": 3, "module_id": 20, "is_deleted": False,
         "creation_time": "2025-03-01T00:00:00Z", "last_update_time": "2025-01-02T00:00:00Z",
         "customer_id": "c2", "user_id": None},
    ]
    return [create(client, acme, body)["id"] for body in bodies]


@pytest.mark.parametrize("query, expected", [
    ("ref_id=r2", [1, 2]),
    ("customer_id=c1", [0, 1]),
    ("user_id=u1", [0]),
    ("msg_type=3", [2]),
    ("is_deleted=true", [1]),
    ("is_deleted=false", [0, 2]),
    ("creation_time=2025-02-01T00:00:00.000Z", [1]),
    ("creation_time=2025-02-01T01:00:00%2B01:00", [1]),
    ("ref_id=r2&customer_id=c1", [1]),
    ("ref_id=nothing", []),
    ("ref_id=", [0, 1, 2]),  # an empty value filters nothing, as in django-filter
])
def test_exact_filters(client, acme, three, query, expected):
    assert ids(client.get(f"{SMS}?{query}", headers=acme)) == [three[i] for i in expected]


def test_exact_filter_on_id(client, acme, three):
    assert ids(client.get(f"{SMS}?id={three[1]}", headers=acme)) == [three[1]]


@pytest.mark.parametrize("query, expected", [
    ("creation_time__gte=2025-02-01T00:00:00Z", [1, 2]),
    ("creation_time__gt=2025-02-01T00:00:00Z", [2]),
    ("creation_time__lte=2025-02-01T00:00:00Z", [0, 1]),
    ("creation_time__lt=2025-02-01T00:00:00Z", [0]),
    ("creation_time__gte=2025-01-15&creation_time__lt=2025-02-15", [1]),
    ("last_update_time__gte=2025-01-03", [0, 1]),
    ("last_update_time__lt=2025-01-03", [2]),
    ("msg_type__gt=1", [1, 2]),
    ("msg_type__lte=2", [0, 1]),
    ("module_id__gte=20", [1, 2]),
    ("module_id__lt=20", [0]),
])
def test_range_filters(client, acme, three, query, expected):
    assert ids(client.get(f"{SMS}?{query}", headers=acme)) == [three[i] for i in expected]


@pytest.mark.parametrize("ordering, expected", [
    ("creation_time", [0, 1, 2]),
    ("-creation_time", [2, 1, 0]),
    ("last_update_time", [2, 0, 1]),
    ("-last_update_time", [1, 0, 2]),
    ("module_id", [0, 2, 1]),
    ("-module_id", [1, 2, 0]),
    ("-msg_type", [2, 1, 0]),
    ("id", [0, 1, 2]),
    ("-id", [2, 1, 0]),
    ("event_time,id", [0, 1, 2]),
    ("-is_deleted", None),
])
def test_ordering(client, acme, three, ordering, expected):
    response = client.get(f"{SMS}?ordering={ordering}", headers=acme)
    if expected is None:
        assert response.status_code == 422
        assert "ordering" in response.get_json()["errors"]["query"]
    else:
        assert ids(response) == [three[i] for i in expected]


def test_ordering_by_several_fields(client, acme):
    a = create(client, acme, {"msg_type": 1, "module_id": 2})["id"]
    b = create(client, acme, {"msg_type": 1, "module_id": 1})["id"]
    c = create(client, acme, {"msg_type": 0, "module_id": 9})["id"]

    assert ids(client.get(f"{SMS}?ordering=-msg_type,module_id", headers=acme)) == [b, a, c]


def test_nulls_sort_after_every_value(client, acme):
    null = create(client, acme, {"msg_type": None, "creation_time": None})["id"]
    one = create(client, acme, {"msg_type": 1})["id"]

    assert ids(client.get(f"{SMS}?ordering=msg_type", headers=acme)) == [one, null]
    assert ids(client.get(f"{SMS}?ordering=-msg_type", headers=acme)) == [null, one]
    assert ids(client.get(SMS, headers=acme)) == [null, one]


@pytest.mark.parametrize("query", [
    "msg_type=x", "module_id__gte=1.5", "is_deleted=maybe", "creation_time=yesterday",
    "creation_time__lt=2025-13-01", "ordering=colour", "ordering=-",
    "msg_type__gt=9223372036854775808", "module_id=-9223372036854775809",
])
def test_unparsable_filters_are_422_naming_the_parameter(client, acme, query):
    response = client.get(f"{SMS}?{query}", headers=acme)

    assert response.status_code == 422
    assert list(response.get_json()["errors"]["query"]) == [query.split("=")[0]]


# --- Page and cursor navigation -----------------------------------------------------------

def links(response) -> dict[str, str]:
    """rel -> URL, from an RFC 8288 Link header."""
    header = response.headers.get("Link", "")
    return {rel: url for url, rel in re.findall(r'<([^>]*)>;\s*rel="([^"]+)"', header)}


def query_of(url: str) -> dict:
    return dict(parse_qsl(urlsplit(url).query))


def test_page_links_lead_through_every_page(client, acme):
    for _ in range(5):
        create(client, acme, {"ref_id": "r"})
    create(client, acme, {"ref_id": "other"})

    first = client.get(f"{SMS}?ref_id=r&page_size=2", headers=acme)
    assert set(links(first)) == {"first", "next", "last"}
    assert query_of(links(first)["next"]) == {"ref_id": "r", "page_size": "2", "page": "2"}
    assert query_of(links(first)["last"])["page"] == "3"
    second = client.get(links(first)["next"], headers=acme)
    assert set(links(second)) == {"first", "prev", "next", "last"}
    last = client.get(links(second)["next"], headers=acme)
    assert set(links(last)) == {"first", "prev", "last"}
    assert query_of(links(last)["prev"])["page"] == "2"
    seen = ids(first) + ids(second) + ids(last)
    assert len(seen) == len(set(seen)) == 5


def test_x_pagination_is_flask_smorest_metadata(client, acme):
    for _ in range(5):
        create(client, acme)

    metadata = json.loads(client.get(f"{SMS}?page=2&page_size=2", headers=acme)
                          .headers["X-Pagination"])

    assert metadata == {"total": 5, "total_pages": 3, "first_page": 1, "last_page": 3,
                        "page": 2, "previous_page": 1, "next_page": 3}


def test_past_the_count_limit_pages_have_no_total(app, client, acme, monkeypatch):
    monkeypatch.setitem(app.config, "LIST_COUNT_LIMIT", 3)
    for _ in range(6):
        create(client, acme)

    first = client.get(f"{SMS}?page_size=2", headers=acme)
    third = client.get(f"{SMS}?page_size=2&page=3", headers=acme)

    assert json.loads(first.headers["X-Pagination"]) == {"first_page": 1, "page": 1,
                                                         "next_page": 2}
    assert set(links(first)) == {"first", "next"}
    assert json.loads(third.headers["X-Pagination"])["total"] == 6  # counted up to this page
    assert "next" not in links(third) and len(ids(third)) == 2


def follow_cursor(client, headers, url: str) -> list[str]:
    seen = []
    while url:
        response = client.get(url, headers=headers)
        assert "X-Pagination" not in response.headers
        seen += ids(response)
        url = links(response).get("next")
    return seen


@pytest.mark.parametrize("ordering, newest_first", [("", False), ("-id", True), ("id", False)])
def test_cursor_pages_follow_id_order(client, acme, ordering, newest_first):
    created = [create(client, acme)["id"] for _ in range(7)]

    seen = follow_cursor(client, acme, f"{SMS}?cursor=*&page_size=3&ordering={ordering}")

    assert seen == sorted(created, reverse=newest_first)


def test_cursor_pages_keep_filters_and_scope(client, acme, globex):
    mine = [create(client, acme, {"ref_id": "r"})["id"] for _ in range(4)]
    create(client, acme, {"ref_id": "other"})
    create(client, globex, {"ref_id": "r"})

    assert follow_cursor(client, acme, f"{SMS}?cursor=*&page_size=3&ref_id=r") == mine


@pytest.mark.parametrize("ordering", ["id", "-id"])
def test_a_cursor_sees_every_message_once_while_new_ones_arrive(app, acme, ordering):
    """A client pages through while another one keeps creating messages."""
    before = {create(app.test_client(), acme)["id"] for _ in range(40)}
    stop = threading.Event()
    created_during = []

    def keep_creating():
        writer = app.test_client()
        while not stop.is_set():
            created_during.append(create(writer, acme)["id"])

    writer = threading.Thread(target=keep_creating)
    writer.start()
    try:
        seen = follow_cursor(app.test_client(), acme,
                             f"{SMS}?cursor=*&page_size=4&ordering={ordering}")
    finally:
        stop.set()
        writer.join()

    assert created_during, "nothing was created during the traversal"
    assert len(seen) == len(set(seen))  # nobody twice
    assert before <= set(seen)  # everybody who was there at the start
    assert set(seen) <= before | set(created_during)


@pytest.mark.parametrize("query, param", [
    ("cursor=nonsense", "cursor"),
    ("cursor=eyJhZnRlciI6IDF9", "cursor"),  # {"after": 1}
    ("cursor=*&page=2", "page"),
    ("cursor=*&ordering=creation_time", "ordering"),
    ("cursor=*&ordering=id,-id", "ordering"),
])
def test_bad_cursor_requests_are_422(client, acme, query, param):
    response = client.get(f"{SMS}?{query}", headers=acme)

    assert response.status_code == 422
    assert list(response.get_json()["errors"]["query"]) == [param]


def test_a_list_is_sent_as_it_is_read_and_a_reader_may_give_up(app, client, acme):
    """A page goes out in pieces while its messages are read (a page of large messages is
    never whole in memory: see bench/list_memory.py). A client that stops reading after
    the first piece gives its connection back, its statement given up: more such clients
    than the pool has connections leave the service as it was."""
    for n in range(30):
        create(client, acme, {"ref_id": str(n), "sms_data": {"values": "v" * 20_000}})
    with app.app_context():
        pool = db.engine.pool

    for _ in range(pool.size() + 5):
        response = client.get(f"{SMS}?page_size=30", headers=acme, buffered=False)
        pieces = iter(response.response)
        assert next(pieces).startswith(b'[{"id":')
        assert next(pieces)  # more than one piece
        response.close()

    assert pool.checkedout() == 0
    whole = client.get(f"{SMS}?page_size=30", headers=acme).get_json()
    assert [message["ref_id"] for message in whole] == [str(n) for n in range(30)]
