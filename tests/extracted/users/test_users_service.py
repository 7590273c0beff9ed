"""The users service: the users part of the Flack contract, its internal endpoints and its pushes.

Each test gets a fresh SQLite database; etcd (revocations) and Redis (the
Socket.IO queue) are real and shared by the module.
"""

from __future__ import annotations

import threading
import time

import pytest
import socketio
from sqlalchemy import create_engine, inspect
from werkzeug.serving import make_server

from extracted.users import create_app
from extracted.users.models import User, db, mark_inactive_users_offline
from monolith.tokens import issue_token

pytestmark = pytest.mark.integration

SECRET = "u" * 64
CHALLENGE = 'Bearer realm="Authentication Required"'


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(tmp_path, etcd_server, redis_server):
    app = create_app({
        "STRANGLER_ENV": "testing",
        "STRANGLER_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'users.sqlite'}",
        "JWT_SECRET_KEY": SECRET,
        "STRANGLER_ETCD": etcd_server.url,
        "SOCKETIO_MESSAGE_QUEUE": redis_server.url,
    })
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_user(client):
    """Register and log in (as tokens does: authenticate, then sign a token); return (user, token)."""

    def make(nickname, password="secret"):
        created = client.post("/api/users", json={"nickname": nickname, "password": password})
        assert created.status_code == 201, created.json
        login = client.post("/internal/users/authenticate",
                            json={"nickname": nickname, "password": password})
        assert login.status_code == 200, login.json
        return created.json, issue_token(login.json["id"], nickname, SECRET)

    return make


def set_users(app, **updated_at):
    with app.app_context():
        for name, value in updated_at.items():
            db.session.execute(db.update(User).where(User.nickname == name).values(updated_at=value))
        db.session.commit()


# -- /api/users: the contract ---------------------------------------------------


def test_new_user_is_201_with_location_and_no_password(client):
    response = client.post("/api/users", json={"nickname": "ada", "password": "pw"})
    body = response.json
    assert response.status_code == 201
    assert response.headers["Location"] == f"/api/users/{body['id']}"
    assert set(body) == {"id", "created_at", "updated_at", "nickname", "last_seen_at", "online", "_links"}
    assert body["_links"] == {"self": f"/api/users/{body['id']}",
                              "messages": f"/api/messages?user_id={body['id']}", "tokens": "/api/tokens"}
    assert body["online"] is False and body["last_seen_at"] == body["created_at"]
    assert "pw" not in response.get_data(as_text=True)


@pytest.mark.parametrize("body", [{"password": "pw"}, {"nickname": "ada"}, {"nickname": "  ", "password": "pw"},
                                  {"nickname": 5, "password": "pw"}, {"nickname": "x" * 33, "password": "pw"}])
def test_new_user_bad_fields_are_400_json(client, body):
    response = client.post("/api/users", json=body)
    assert response.status_code == 400 and response.json["error"]


@pytest.mark.parametrize("raw", ["{nickname", "[1, 2]", "null", ""])
def test_new_user_body_not_an_object_is_400(client, raw):
    response = client.post("/api/users", data=raw, content_type="application/json")
    assert response.status_code == 400 and "error" in response.json


def test_duplicate_nickname_is_400(client):
    client.post("/api/users", json={"nickname": "ada", "password": "pw"})
    response = client.post("/api/users", json={"nickname": "ada", "password": "x"})
    assert response.status_code == 400 and "taken" in response.json["error"]


def test_users_ordered_by_updated_at_then_nickname(app, client):
    for name in ("carol", "alice", "bob"):
        client.post("/api/users", json={"nickname": name, "password": "pw"})
    set_users(app, carol=100, alice=200, bob=100)
    assert [u["nickname"] for u in client.get("/api/users").json["users"]] == ["bob", "carol", "alice"]


def test_updated_since_is_strictly_greater(app, client):
    for name in ("old", "edge", "new"):
        client.post("/api/users", json={"nickname": name, "password": "pw"})
    set_users(app, old=10, edge=20, new=30)
    assert [u["nickname"] for u in client.get("/api/users?updated_since=20").json["users"]] == ["new"]


def test_online_filter(client, make_user):
    make_user("online-one")
    client.post("/api/users", json={"nickname": "never-logged-in", "password": "pw"})
    assert [u["nickname"] for u in client.get("/api/users?online=1").json["users"]] == ["online-one"]
    assert [u["nickname"] for u in client.get("/api/users?online=0").json["users"]] == ["never-logged-in"]


@pytest.mark.parametrize("query", ["online=yes", "updated_since=soon", "updated_since=1e3"])
def test_bad_filters_are_400(client, query):
    response = client.get(f"/api/users?{query}")
    assert response.status_code == 400 and response.json["error"]


def test_bad_token_is_401_with_bearer_challenge(client):
    response = client.get("/api/users", headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE and response.json["error"]


def test_token_of_unknown_user_is_401(client):
    assert client.get("/api/users", headers=bearer(issue_token(4242, "ghost", SECRET))).status_code == 401


def test_token_use_marks_the_user_online(app, client, make_user):
    user, token = make_user("ada")
    with app.app_context():
        db.session.execute(db.update(User).values(online=False, last_seen_at=0))
        db.session.commit()
    listed = client.get("/api/users", headers=bearer(token)).json["users"]
    assert listed[0]["online"] is True and listed[0]["last_seen_at"] >= int(time.time()) - 1


def test_get_user_200_and_404(client):
    created = client.post("/api/users", json={"nickname": "ada", "password": "pw"}).json
    assert client.get(f"/api/users/{created['id']}").json == created
    missing = client.get("/api/users/999")
    assert missing.status_code == 404 and missing.json["error"]


@pytest.mark.parametrize("path", ["/api/users/abc", "/api/users/-1", "/api/users/0",
                                  "/api/users/99999999999999999999999"])
def test_odd_ids_are_404_json(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response.is_json


def test_edit_own_nickname_is_204(client, make_user):
    user, token = make_user("ada")
    assert client.put(f"/api/users/{user['id']}", json={"nickname": "ada2"},
                      headers=bearer(token)).status_code == 204
    assert client.get(f"/api/users/{user['id']}").json["nickname"] == "ada2"


def test_edit_needs_a_token_and_only_yourself(client, make_user):
    ada, _ = make_user("ada")
    _bob, bob_token = make_user("bob")
    no_token = client.put(f"/api/users/{ada['id']}", json={"nickname": "x"})
    assert no_token.status_code == 401 and no_token.headers["WWW-Authenticate"] == CHALLENGE
    other = client.put(f"/api/users/{ada['id']}", json={"nickname": "evil"}, headers=bearer(bob_token))
    assert other.status_code == 403 and other.json["error"]
    assert client.put("/api/users/999", json={"nickname": "x"}, headers=bearer(bob_token)).status_code == 404
    assert client.get(f"/api/users/{ada['id']}").json["nickname"] == "ada"


@pytest.mark.parametrize("body", [{"nickname": "bob"}, {"nickname": 3}, {"nickname": "y" * 40},
                                  {"password": ""}, [1]])
def test_edit_bad_input_is_400(client, make_user, body):
    ada, token = make_user("ada")
    make_user("bob")
    response = client.put(f"/api/users/{ada['id']}", json=body, headers=bearer(token))
    assert response.status_code == 400 and response.json["error"]
    assert client.get(f"/api/users/{ada['id']}").json["nickname"] == "ada"


def test_password_change_revokes_old_tokens_in_etcd(client, make_user, etcd_server):
    ada, token = make_user("ada", "old")
    assert client.put(f"/api/users/{ada['id']}", json={"password": "new"},
                      headers=bearer(token)).status_code == 204
    assert client.get("/api/users", headers=bearer(token)).status_code == 401
    assert etcd_server.client().get(f"strangler/revoked/user/{ada['id']}") is not None
    assert client.post("/internal/users/authenticate",
                       json={"nickname": "ada", "password": "old"}).status_code == 401
    fresh = client.post("/internal/users/authenticate", json={"nickname": "ada", "password": "new"})
    assert fresh.status_code == 200
    assert client.get("/api/users", headers=bearer(issue_token(ada["id"], "ada", SECRET))).status_code == 200


def test_wrong_method_is_405_json(client):
    response = client.delete("/api/users")
    assert response.status_code == 405 and response.is_json and "Allow" in response.headers


def test_healthz_names_the_service(client):
    assert client.get("/healthz").json["service"] == "users"


# -- /internal/users: for other services ----------------------------------------


def test_authenticate_marks_online_and_returns_the_user(client):
    created = client.post("/api/users", json={"nickname": "ada", "password": "pw"}).json
    response = client.post("/internal/users/authenticate", json={"nickname": "ada", "password": "pw"})
    assert response.status_code == 200
    assert response.json["id"] == created["id"] and response.json["online"] is True
    assert client.get(f"/api/users/{created['id']}").json["online"] is True


@pytest.mark.parametrize("body,status", [({"nickname": "ada", "password": "no"}, 401),
                                         ({"nickname": "nobody", "password": "pw"}, 401),
                                         ({"nickname": "", "password": ""}, 401),
                                         ({"nickname": "ada"}, 400), ([1], 400)])
def test_authenticate_refusals(client, body, status):
    client.post("/api/users", json={"nickname": "ada", "password": "pw"})
    response = client.post("/internal/users/authenticate", json=body)
    assert response.status_code == status and response.json["error"]


def test_seen_and_offline(client):
    created = client.post("/api/users", json={"nickname": "ada", "password": "pw"}).json
    assert client.put(f"/internal/users/{created['id']}/seen").status_code == 204
    assert client.get(f"/api/users/{created['id']}").json["online"] is True
    assert client.put(f"/internal/users/{created['id']}/offline").status_code == 204
    assert client.get(f"/api/users/{created['id']}").json["online"] is False
    assert client.put("/internal/users/999/seen").status_code == 404
    assert client.put("/internal/users/999/offline").status_code == 404
    unknown = client.get("/internal/users/nothing/here")
    assert unknown.status_code == 404 and unknown.is_json


def test_idle_users_are_marked_offline(app, make_user):
    ada, _ = make_user("ada")
    make_user("bob")
    with app.app_context():
        db.session.execute(db.update(User).where(User.id == ada["id"]).values(last_seen_at=0))
        db.session.commit()
        assert mark_inactive_users_offline() == [ada["id"]]


def test_schema_is_the_monolith_users_table(app, tmp_path):
    from monolith.db import upgrade_database

    upgrade_database(f"sqlite:///{tmp_path / 'mono.sqlite'}", tmp_path / "m.lock")

    def shape(url):
        engine = create_engine(url)
        try:
            found = inspect(engine)
            columns = [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns("users")]
            indexes = sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                             for i in found.get_indexes("users"))
            return columns, indexes, found.get_pk_constraint("users")["constrained_columns"]
        finally:
            engine.dispose()

    assert shape(app.config["DATABASE_URL"]) == shape(f"sqlite:///{tmp_path / 'mono.sqlite'}")


# -- pushes: through Redis to a real Socket.IO server and client ----------------


@pytest.fixture(scope="module")
def socketio_server(redis_server):
    """A Socket.IO server listening to the Redis queue, as the socketio service does."""
    manager = socketio.RedisManager(redis_server.url, channel="flask-socketio")
    server = socketio.Server(client_manager=manager, async_mode="threading")
    httpd = make_server("127.0.0.1", 0, socketio.WSGIApp(server), threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture
def listener(socketio_server):
    received = []
    sio = socketio.Client()
    sio.on("updated_model", received.append)
    sio.connect(socketio_server, transports=["polling"], wait_timeout=10)
    yield received
    sio.disconnect()


def wait_for(received, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(predicate(event) for event in received):
            return True
        time.sleep(0.05)
    return False


def test_changes_reach_socketio_clients_through_redis(client, listener):
    time.sleep(0.3)  # let the server's Redis subscription settle
    created = client.post("/api/users", json={"nickname": "pushed", "password": "pw"}).json
    assert wait_for(listener, lambda e: e == {"class": "User", "model": created})
    client.put(f"/internal/users/{created['id']}/seen")
    assert wait_for(listener, lambda e: e["model"]["id"] == created["id"] and e["model"]["online"])


def test_failed_change_is_not_pushed(client, listener):
    time.sleep(0.3)
    client.post("/api/users", json={"nickname": "dup", "password": "pw"})
    client.post("/api/users", json={"nickname": "dup", "password": "pw"})  # refused
    client.post("/api/users", json={"nickname": "marker", "password": "pw"})
    assert wait_for(listener, lambda e: e["model"]["nickname"] == "marker")
    assert [e["model"]["nickname"] for e in listener].count("dup") == 1

