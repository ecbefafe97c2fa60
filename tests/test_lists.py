"""Lists (contract: "Lists"): pages, filters, ordering, and their cost in statements."""
import pytest

from conftest import SMS
from test_messages import create, full_message

def test_list_is_a_plain_array_newest_first(client, acme):
    old = create(client, acme, {"creation_time": "2024-01-01T00:00:00Z"})
    new = create(client, acme, {"creation_time": "2025-01-01T00:00:00Z"})
    middle = create(client, acme, {"creation_time": "2024-06-01T00:00:00Z"})

    response = client.get(SMS, headers=acme)

    assert response.status_code == 200
    assert [m["id"] for m in response.get_json()] == [new["id"], middle["id"], old["id"]]
    assert response.get_json()[0] == new


def test_list_pages(client, acme):
    ids = [create(client, acme)["id"] for _ in range(5)]
    newest_first = sorted(ids, reverse=True)  # same creation time: then by id, descending

    pages = [client.get(f"{SMS}?page={n}&page_size=2", headers=acme) for n in (1, 2, 3, 4)]

    assert [[m["id"] for m in page.get_json()] for page in pages] == [
        newest_first[:2], newest_first[2:4], newest_first[4:], []
    ]
    assert '"total": 5' in pages[0].headers["X-Pagination"]
    assert len(client.get(SMS, headers=acme).get_json()) == 5


@pytest.mark.parametrize("query", ["page=0", "page=x", "page_size=0", "page_size=1001",
                                   "page_size=ten"])
def test_bad_page_parameters_are_422_naming_them(client, acme, query):
    response = client.get(f"{SMS}?{query}", headers=acme)

    assert response.status_code == 422
    assert query.split("=")[0] in response.get_json()["errors"]["query"]


def test_unknown_query_parameters_are_ignored(client, acme):
    create(client, acme)

    response = client.get(f"{SMS}?format=json&colour=red", headers=acme)

    assert response.status_code == 200 and len(response.get_json()) == 1


def test_list_costs_the_same_statements_for_any_page_size(client, acme, count_statements):
    for _ in range(20):
        create(client, acme, full_message())

    with count_statements() as one:
        assert len(client.get(f"{SMS}?page_size=1", headers=acme).get_json()) == 1
    with count_statements() as twenty:
        assert len(client.get(f"{SMS}?page_size=20", headers=acme).get_json()) == 20

    assert one[0] == twenty[0] <= 5  # key, count, page, attachments, key/values




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
    ("ref_id=r2", [2, 1]),
    ("customer_id=c1", [1, 0]),
    ("user_id=u1", [0]),
    ("msg_type=3", [2]),
    ("is_deleted=true", [1]),
    ("is_deleted=false", [2, 0]),
    ("creation_time=2025-02-01T00:00:00.000Z", [1]),
    ("creation_time=2025-02-01T01:00:00%2B01:00", [1]),
    ("ref_id=r2&customer_id=c1", [1]),
    ("ref_id=nothing", []),
    ("ref_id=", [2, 1, 0]),  # an empty value filters nothing, as in django-filter
])
def test_exact_filters(client, acme, three, query, expected):
    assert ids(client.get(f"{SMS}?{query}", headers=acme)) == [three[i] for i in expected]


def test_exact_filter_on_id(client, acme, three):
    assert ids(client.get(f"{SMS}?id={three[1]}", headers=acme)) == [three[1]]


@pytest.mark.parametrize("query, expected", [
    ("creation_time__gte=2025-02-01T00:00:00Z", [2, 1]),
    ("creation_time__gt=2025-02-01T00:00:00Z", [2]),
    ("creation_time__lte=2025-02-01T00:00:00Z", [1, 0]),
    ("creation_time__lt=2025-02-01T00:00:00Z", [0]),
    ("creation_time__gte=2025-01-15&creation_time__lt=2025-02-15", [1]),
    ("last_update_time__gte=2025-01-03", [1, 0]),
    ("last_update_time__lt=2025-01-03", [2]),
    ("msg_type__gt=1", [2, 1]),
    ("msg_type__lte=2", [1, 0]),
    ("module_id__gte=20", [2, 1]),
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
    "creation_time__lt=2025-13-01", "ordering=colour", "ordering=-", "msg_type__gt=99999999999",
])
def test_unparsable_filters_are_422_naming_the_parameter(client, acme, query):
    response = client.get(f"{SMS}?{query}", headers=acme)

    assert response.status_code == 422
    assert list(response.get_json()["errors"]["query"]) == [query.split("=")[0]]
