"""ETags and conditional requests (contract: "Concurrency"), and no lost update under real
parallel PATCHes against gunicorn on PostgreSQL."""
import json
import socket

import pytest

from helpers import SMS, at_once, create, full_message, http, make_key, row_counts, url


def test_every_read_and_write_gives_the_messages_etag(client, acme):
    response = client.post(SMS, json={}, headers=acme)
    created = response.get_json()
    first = response.headers["ETag"]

    assert client.get(url(created["id"]), headers=acme).headers["ETag"] == first
    patched = client.patch(url(created["id"]), json={"ref_id": "x"}, headers=acme)
    put = client.put(url(created["id"]), json={"attachment_ids": ["a"]}, headers=acme)
    assert len({first, patched.headers["ETag"], put.headers["ETag"]}) == 3
    assert client.get(url(created["id"]), headers=acme).headers["ETag"] == put.headers["ETag"]


@pytest.mark.parametrize("if_none_match, status", [
    ("{tag}", 304), ("W/{tag}", 304), ('"other", {tag}', 304), ("*", 304),
    ('"999"', 200), ("garbage", 200),
])
def test_if_none_match_gives_304(client, acme, if_none_match, status):
    created = client.post(SMS, json={}, headers=acme)
    tag = created.headers["ETag"]

    response = client.get(url(created.get_json()["id"]),
                          headers={**acme, "If-None-Match": if_none_match.format(tag=tag)})

    assert response.status_code == status
    assert response.headers["ETag"] == tag
    assert (response.data == b"") == (status == 304)


@pytest.mark.parametrize("method, body", [
    ("patch", {"ref_id": "new"}), ("put", {"ref_id": "new"}),
    ("patch", {"attachment_ids": ["z"], "sms_data": None, "message_read_map": []}),
    ("delete", None),
])
def test_if_match_with_a_stale_etag_is_412_and_changes_nothing(app, client, acme, method, body):
    created = client.post(SMS, json=full_message(), headers=acme)
    message, stale = created.get_json(), created.headers["ETag"]
    client.patch(url(message["id"]), json={"type": "changed by someone else"}, headers=acme)
    current = client.get(url(message["id"]), headers=acme)

    for if_match in (stale, "W/" + current.headers["ETag"], '"nonsense"', "garbage", '""',
                     '"99999999999999999999"', '"-1"', '"²"', '"١"', '"1²"'):
        response = getattr(client, method)(url(message["id"]), json=body,
                                           headers={**acme, "If-Match": if_match})
        assert response.status_code == 412, if_match
        assert response.get_json()["code"] == 412
    assert client.get(url(message["id"]), headers=acme).get_json() == current.get_json()
    assert row_counts(app) == (1, 3, 6)


@pytest.mark.parametrize("method, body, status", [
    ("patch", {"ref_id": "new"}, 200), ("put", {"ref_display_id": "new"}, 200),
    ("patch", {"attachment_ids": ["z"]}, 200), ("delete", None, 204),
])
def test_if_match_with_the_current_etag_or_star_succeeds(client, acme, method, body, status):
    for if_match in ("{tag}", '"other", {tag}', "*"):
        created = client.post(SMS, json={}, headers=acme)
        headers = {**acme, "If-Match": if_match.format(tag=created.headers["ETag"])}
        response = getattr(client, method)(url(created.get_json()["id"]), json=body,
                                           headers=headers)
        assert response.status_code == status, if_match


def test_if_match_on_an_unknown_message_is_404(client, acme):
    create(client, acme)
    for method in ("patch", "put", "delete"):
        response = getattr(client, method)(url("0" * 24), json={},
                                           headers={**acme, "If-Match": '"1"'})
        assert response.status_code == 404


def test_parallel_patches_with_one_etag_have_exactly_one_winner(service):
    acme = make_key(service.app, "acme")
    status, headers, body = http("POST", f"{service.base}{SMS}", acme, {"ref_id": "original"})
    message_url = f"{service.base}{url(json.loads(body)['id'])}"

    results = at_once(20, lambda n: http(
        "PATCH", message_url, {**acme, "If-Match": headers["ETag"]},
        {"ref_id": f"writer-{n}", "attachment_ids": [str(n)]}))

    winners = [n for n, (status, _, _) in enumerate(results) if status == 200]
    assert sorted(status for status, _, _ in results) == [200] + [412] * 19
    final_status, final_headers, final_body = http("GET", message_url, acme)
    final = json.loads(final_body)
    assert final["ref_id"] == f"writer-{winners[0]}"
    assert final["attachment_ids"] == [str(winners[0])]
    assert final_headers["ETag"] == results[winners[0]][1]["ETag"] == '"2"'


def test_parallel_retries_with_one_idempotency_key_create_one_message(service):
    """20 clients send the same POST with the same Idempotency-Key at once: one message;
    every other answer is the first one replayed, byte for byte, or a 409."""
    acme = {**make_key(service.app, "acme"), "Idempotency-Key": "parallel-retry"}
    body = {**full_message(), "ref_id": "parallel-retry"}

    results = at_once(20, lambda _: http("POST", f"{service.base}{SMS}", acme, body))

    created = [result for result in results
               if result[0] == 201 and "Idempotent-Replayed" not in result[1]]
    replays = [result for result in results
               if result[0] == 201 and result[1].get("Idempotent-Replayed") == "true"]
    conflicts = [result for result in results if result[0] == 409]
    print(f"\n20 parallel POSTs with one Idempotency-Key: {len(created)} created, "
          f"{len(replays)} replayed, {len(conflicts)} answered 409")
    assert len(created) == 1 and len(replays) + len(conflicts) == 19
    [(_, headers, first_body)] = created
    for _, replay_headers, replay_body in replays:
        assert replay_body == first_body
        assert [replay_headers[h] for h in ("Location", "ETag", "Content-Type")] == [
            headers[h] for h in ("Location", "ETag", "Content-Type")]
    for _, conflict_headers, _ in conflicts:
        assert conflict_headers["Retry-After"] == "1"
    _, _, listed = http("GET", f"{service.base}{SMS}?ref_id=parallel-retry", acme)
    assert [message["id"] for message in json.loads(listed)] == [json.loads(first_body)["id"]]
    _, _, later = http("POST", f"{service.base}{SMS}", acme, body)
    assert later == first_body


def test_slow_clients_do_not_hold_up_the_others(service):
    """Sockets that send their request a byte a second (ten for each of gunicorn's three
    workers, which sync workers would each give a worker to) while others are served."""
    acme = make_key(service.app, "acme")
    host, port = service.base.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port))) for _ in range(30)]
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        answered = []
        for n in range(10):
            for sock in slow:
                sock.sendall(b"X")  # a header that never ends
            answered.append(http("GET", f"{service.base}{SMS}", acme)[0])
            answered.append(http("GET", f"{service.base}/healthz", {})[0])
    finally:
        for sock in slow:
            sock.close()

    assert answered == [200] * 20


def test_clients_that_hang_up_mid_list_leave_nothing_behind(service):
    """Each reads the start of a large page and hangs up: gunicorn closes the response,
    which gives up its statement and gives its connection back."""
    acme = make_key(service.app, "hang-up")
    for n in range(30):
        http("POST", f"{service.base}{SMS}", acme, {"sms_data": {"values": "v" * 40_000}})
    host, port = service.base.removeprefix("http://").split(":")

    for _ in range(60):  # more than the pools of three workers hold connections
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(f"GET {SMS}?page_size=30 HTTP/1.1\r\nHost: localhost\r\n"
                         f"Authorization: {acme['Authorization']}\r\n\r\n".encode())
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")

    status, _, body = http("GET", f"{service.base}{SMS}?page_size=30", acme)
    assert status == 200 and len(json.loads(body)) == 30
