"""A request's database work (messenger_app/db.py): one connection, given back at teardown;
one write, whose atomic statements commit once, at its end, or not at all."""
import pytest
from sqlalchemy import func, select

from messenger_app.db import db
from messenger_app.models import messages, utcnow


def message_count() -> int:
    return db.connection().scalar(select(func.count()).select_from(messages))


def insert(message_id: str) -> None:
    db.atomic().execute(messages.insert().values(id=message_id, organization="acme",
                                                 event_time=utcnow()))


def test_a_write_commits_what_ran_atomically_once_at_its_end(app):
    with app.test_request_context():
        with db.write():
            insert("a" * 24)
            insert("b" * 24)
            assert db.connection().in_transaction()
        assert message_count() == 2


def test_a_write_that_fails_leaves_nothing(app):
    with app.test_request_context():
        with pytest.raises(ZeroDivisionError), db.write():
            insert("a" * 24)
            1 / 0
        assert message_count() == 0
        db.connection().execute(  # the connection is in autocommit again
            messages.insert().values(id="c" * 24, organization="acme", event_time=utcnow()))
    with app.test_request_context():  # so that row committed without a COMMIT
        assert message_count() == 1


def test_atomic_is_only_for_a_write_and_a_request_has_one(app):
    with app.test_request_context():
        with pytest.raises(RuntimeError):
            db.atomic()
        with db.write(), pytest.raises(RuntimeError):
            with db.write():
                pass


def test_a_request_gives_its_connection_back(app, client, acme):
    assert client.get("/ux/common/messenger/sms/", headers=acme).status_code == 200
    assert client.post("/ux/common/messenger/sms/", json={}, headers=acme).status_code == 201

    with app.app_context():
        assert db.engine.pool.checkedout() == 0
