"""``monolith.models``: dicts, passwords, timestamps and the pushes after commit."""

from __future__ import annotations

import time

import pytest
from flack_helpers import pushes

from monolith import db
from monolith.models import Message, User, ValidationError


def test_password_is_hashed_and_write_only(app):
    with app.app_context():
        user = User(nickname="ada")
        user.password = "pw"
        assert user.password_hash != "pw"
        assert user.verify_password("pw") and not user.verify_password("PW")
        with pytest.raises(AttributeError):
            _ = user.password


def test_to_dict_never_contains_the_hash(app):
    with app.app_context():
        user = User()
        user.from_dict({"nickname": "ada", "password": "pw"})
        db.session.add(user)
        db.session.commit()
        as_dict = user.to_dict()
        assert "password" not in as_dict and "password_hash" not in as_dict
        assert user.password_hash not in str(as_dict)


def test_from_dict_strips_and_validates(app):
    with app.app_context():
        user = User()
        user.from_dict({"nickname": "  ada ", "password": "pw"})
        assert user.nickname == "ada"
        with pytest.raises(ValidationError, match="nickname"):
            User().from_dict({"password": "pw"})
        user.from_dict({"password": "new"}, partial=True)
        assert user.nickname == "ada" and user.verify_password("new")
        with pytest.raises(ValidationError, match="source"):
            Message().from_dict({"source": ""})


def test_timestamps_are_set_on_insert_and_bumped_on_change(app):
    with app.app_context():
        user = User(nickname="ada", password_hash="x")
        db.session.add(user)
        db.session.commit()
        assert isinstance(user.created_at, int) and user.created_at == user.updated_at
        assert user.last_seen_at == user.created_at
        db.session.execute(db.update(User).values(updated_at=1, created_at=1))
        db.session.commit()
        user.nickname = "ada2"
        db.session.commit()
        assert user.created_at == 1 and user.updated_at >= int(time.time()) - 1


def test_unchanged_object_is_not_bumped_or_pushed(app, sio):
    with app.app_context():
        user = User(nickname="ada", password_hash="x")
        db.session.add(user)
        db.session.commit()
        db.session.execute(db.update(User).values(updated_at=1))
        db.session.commit()
        sio.get_received()
        user.from_dict({"nickname": "ada"}, partial=True)  # same value
        db.session.commit()
        assert user.updated_at == 1
    assert pushes(sio) == []


def test_ping_marks_online_and_seen(app):
    with app.app_context():
        user = User(nickname="ada", password_hash="x")
        user.ping(now=1234)
        assert user.online is True and user.last_seen_at == 1234


def test_pushes_happen_after_commit_only(app, sio):
    with app.app_context():
        user = User(nickname="ada", password_hash="x")
        db.session.add(user)
        db.session.flush()
        assert pushes(sio) == []
        db.session.commit()
        assert [m["nickname"] for m in pushes(sio, "User")] == ["ada"]
        user.nickname = "gone"
        db.session.flush()
        db.session.rollback()
        db.session.commit()
    assert pushes(sio) == []


def test_several_flushes_push_the_final_state_once(app, sio):
    with app.app_context():
        user = User(nickname="a", password_hash="x")
        db.session.add(user)
        db.session.flush()
        user.nickname = "b"
        db.session.flush()
        db.session.commit()
    assert [m["nickname"] for m in pushes(sio, "User")] == ["b"]


def test_message_dict_links(app):
    with app.app_context():
        user = User(nickname="ada", password_hash="x")
        db.session.add(user)
        db.session.flush()
        message = Message(user_id=user.id, source="s", html="s")
        db.session.add(message)
        db.session.commit()
        assert message.to_dict()["_links"] == {
            "self": f"/api/messages/{message.id}",
            "user": f"/api/users/{user.id}",
        }
