"""``/api/users``: registration, listing with filters, showing and editing users."""

from __future__ import annotations

import time

import pytest
from flack_helpers import basic_auth, bearer

from monolith import db
from monolith.models import User


def test_new_user_returns_201_with_location_and_no_password(client):
    response = client.post("/api/users", json={"nickname": "ada", "password": "pw"})
    assert response.status_code == 201
    body = response.json
    assert response.headers["Location"] == f"/api/users/{body['id']}"
    assert body["nickname"] == "ada"
    assert set(body) == {"id", "created_at", "updated_at", "nickname", "last_seen_at", "online", "_links"}
    assert body["_links"] == {
        "self": f"/api/users/{body['id']}",
        "messages": f"/api/messages?user_id={body['id']}",
        "tokens": "/api/tokens",
    }
    assert all(isinstance(body[k], int) for k in ("created_at", "updated_at", "last_seen_at"))
    assert "pw" not in response.get_data(as_text=True)


def test_new_user_duplicate_nickname_is_400(client):
    assert client.post("/api/users", json={"nickname": "ada", "password": "pw"}).status_code == 201
    response = client.post("/api/users", json={"nickname": "ada", "password": "other"})
    assert response.status_code == 400
    assert "taken" in response.json["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"password": "pw"},
        {"nickname": "ada"},
        {"nickname": "", "password": "pw"},
        {"nickname": "   ", "password": "pw"},
        {"nickname": 5, "password": "pw"},
        {"nickname": "ada", "password": ["pw"]},
        {"nickname": None, "password": "pw"},
        {"nickname": "x" * 33, "password": "pw"},
    ],
)
def test_new_user_bad_fields_are_400(client, body):
    response = client.post("/api/users", json=body)
    assert response.status_code == 400
    assert response.is_json and response.json["error"]


@pytest.mark.parametrize("raw", ["{nickname", "[1, 2]", '"ada"', "null", "", "42"])
def test_new_user_body_not_an_object_is_400(client, raw):
    response = client.post("/api/users", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert response.is_json and "error" in response.json


def test_nickname_of_32_characters_is_accepted(client):
    response = client.post("/api/users", json={"nickname": "n" * 32, "password": "pw"})
    assert response.status_code == 201


def test_get_users_orders_by_updated_at_then_nickname(app, client, make_user):
    for name in ("carol", "alice", "bob"):
        client.post("/api/users", json={"nickname": name, "password": "pw"})
    with app.app_context():
        for name, updated in (("carol", 100), ("alice", 200), ("bob", 100)):
            db.session.execute(
                db.update(User).where(User.nickname == name).values(updated_at=updated)
            )
        db.session.commit()
    names = [u["nickname"] for u in client.get("/api/users").json["users"]]
    assert names == ["bob", "carol", "alice"]


def test_get_users_updated_since_is_strictly_greater(app, client):
    for name in ("old", "edge", "new"):
        client.post("/api/users", json={"nickname": name, "password": "pw"})
    with app.app_context():
        for name, updated in (("old", 10), ("edge", 20), ("new", 30)):
            db.session.execute(
                db.update(User).where(User.nickname == name).values(updated_at=updated)
            )
        db.session.commit()
    names = [u["nickname"] for u in client.get("/api/users?updated_since=20").json["users"]]
    assert names == ["new"]


def test_get_users_online_filter(client, make_user):
    make_user("online-one")  # logging in marks online
    client.post("/api/users", json={"nickname": "never-logged-in", "password": "pw"})
    online = [u["nickname"] for u in client.get("/api/users?online=1").json["users"]]
    offline = [u["nickname"] for u in client.get("/api/users?online=0").json["users"]]
    assert online == ["online-one"]
    assert offline == ["never-logged-in"]


@pytest.mark.parametrize("query", ["online=yes", "updated_since=soon", "updated_since=1e3"])
def test_get_users_bad_filters_are_400(client, query):
    response = client.get(f"/api/users?{query}")
    assert response.status_code == 400
    assert response.json["error"]


def test_get_users_with_bad_token_is_401_bearer(client):
    response = client.get("/api/users", headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Authentication Required"'
    assert response.json["error"]


def test_get_users_with_good_token_marks_user_online(client, app):
    client.post("/api/users", json={"nickname": "ada", "password": "pw"})
    login = client.post("/api/tokens", headers=basic_auth("ada", "pw")).json["token"]
    with app.app_context():
        db.session.execute(db.update(User).values(online=False, last_seen_at=0))
        db.session.commit()
    users = client.get("/api/users", headers=bearer(login)).json["users"]
    assert users[0]["online"] is True
    assert users[0]["last_seen_at"] >= int(time.time()) - 1


def test_get_user_200_and_404(client):
    created = client.post("/api/users", json={"nickname": "ada", "password": "pw"}).json
    assert client.get(f"/api/users/{created['id']}").json == created
    missing = client.get("/api/users/999")
    assert missing.status_code == 404
    assert missing.json["error"]


@pytest.mark.parametrize("path", ["/api/users/abc", "/api/users/-1", "/api/users/1.5", "/api/users/0",
                                  "/api/users/99999999999999999999999"])
def test_get_user_odd_ids_are_404_json(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.is_json


def test_edit_user_changes_nickname(client, make_user):
    user, token = make_user("ada")
    response = client.put(f"/api/users/{user['id']}", json={"nickname": "ada2"}, headers=bearer(token))
    assert response.status_code == 204
    assert client.get(f"/api/users/{user['id']}").json["nickname"] == "ada2"


def test_edit_user_needs_a_token(client, make_user):
    user, _token = make_user("ada")
    response = client.put(f"/api/users/{user['id']}", json={"nickname": "x"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_edit_other_user_is_403(client, make_user):
    ada, _ = make_user("ada")
    _bob, bob_token = make_user("bob")
    response = client.put(f"/api/users/{ada['id']}", json={"nickname": "evil"}, headers=bearer(bob_token))
    assert response.status_code == 403
    assert client.get(f"/api/users/{ada['id']}").json["nickname"] == "ada"


def test_edit_missing_user_is_404(client, make_user):
    _ada, token = make_user("ada")
    assert client.put("/api/users/999", json={"nickname": "x"}, headers=bearer(token)).status_code == 404


@pytest.mark.parametrize(
    "body", [{"nickname": "bob"}, {"nickname": 3}, {"nickname": "y" * 40}, {"password": ""}, [1]]
)
def test_edit_user_bad_input_is_400(client, make_user, body):
    ada, token = make_user("ada")
    make_user("bob")
    response = client.put(f"/api/users/{ada['id']}", json=body, headers=bearer(token))
    assert response.status_code == 400
    assert client.get(f"/api/users/{ada['id']}").json["nickname"] == "ada"


def test_password_change_revokes_old_tokens_and_allows_new_login(client, make_user):
    ada, token = make_user("ada", "old")
    response = client.put(f"/api/users/{ada['id']}", json={"password": "new"}, headers=bearer(token))
    assert response.status_code == 204
    assert client.get("/api/users", headers=bearer(token)).status_code == 401
    assert client.post("/api/tokens", headers=basic_auth("ada", "old")).status_code == 401
    fresh = client.post("/api/tokens", headers=basic_auth("ada", "new")).json["token"]
    assert client.get("/api/users", headers=bearer(fresh)).status_code == 200


def test_nickname_change_keeps_tokens_valid(client, make_user):
    ada, token = make_user("ada")
    client.put(f"/api/users/{ada['id']}", json={"nickname": "ada2"}, headers=bearer(token))
    assert client.get("/api/users", headers=bearer(token)).status_code == 200


def test_users_wrong_method_is_405_json(client):
    response = client.delete("/api/users")
    assert response.status_code == 405
    assert response.is_json and "Allow" in response.headers
