"""The messages service: the messages part of the Flack contract, on its own database.

The service runs in the Flask test client on a temp SQLite file; the users
service it calls (``PUT /internal/users/<id>/seen``) is the real one, served
over real HTTP from a thread, and revocations live in a real etcd.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from sqlalchemy import update
from werkzeug.serving import make_server

from extracted.messages import create_app
from extracted.messages.models import Message, db
from monolith.tokens import decode_token, issue_token
from strangler import procs

pytestmark = pytest.mark.integration

SECRET = "jwt-" + uuid.uuid4().hex


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve a WSGI *app* over real HTTP from a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()


def service_config(tmp_path, etcd_url: str, **extra) -> dict:
    return {"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "data"),
            "JWT_SECRET_KEY": SECRET, "STRANGLER_ETCD": etcd_url, **extra}


@pytest.fixture(scope="module")
def users_url(etcd_server, tmp_path_factory) -> Iterator[str]:
    """The real users service for this module, over HTTP: the messages service's LB target."""
    from extracted.users import create_app as create_users

    tmp = tmp_path_factory.mktemp("users")
    app = create_users(service_config(tmp, etcd_server.url,
                                      DATABASE_URL=f"sqlite:///{tmp / 'users.sqlite'}"))
    with serving(app) as url:
        yield url


@pytest.fixture
def app(tmp_path, etcd_server, users_url):
    app = create_app(service_config(tmp_path, etcd_server.url, STRANGLER_LB_URL=users_url,
                                    DATABASE_URL=f"sqlite:///{tmp_path / 'messages.sqlite'}"))
    yield app
    app.extensions["link_expander"].shutdown(wait=True)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_user(users_url):
    """Register a user in the users service; return (user dict, token)."""

    def make(nickname: str | None = None) -> tuple[dict, str]:
        nickname = nickname or "u" + uuid.uuid4().hex[:10]
        created = requests.post(f"{users_url}/api/users",
                                json={"nickname": nickname, "password": "pw"}, timeout=10)
        assert created.status_code == 201, created.text
        user = created.json()
        return user, issue_token(user["id"], nickname, SECRET)

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(client, token, source="hello"):
    return client.post("/api/messages", json={"source": source}, headers=bearer(token))


def set_updated_at(app, message_id, value):
    with app.app_context():
        db.session.execute(update(Message).where(Message.id == message_id).values(updated_at=value))
        db.session.commit()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# ------------------------------------------------------------------ posting


def test_new_message_is_201_with_location_and_rendered_html(client, make_user):
    user, token = make_user()
    response = post(client, token, "hello *world*!")
    assert response.status_code == 201
    body = response.json
    assert response.headers["Location"] == f"/api/messages/{body['id']}"
    assert body["html"] == "hello <em>world</em>!"
    assert body["source"] == "hello *world*!" and body["user_id"] == user["id"]
    assert body["_links"] == {"self": f"/api/messages/{body['id']}", "user": f"/api/users/{user['id']}"}
    assert set(body) == {"id", "created_at", "updated_at", "source", "html", "user_id", "_links"}
    assert abs(body["created_at"] - time.time()) < 5 and body["updated_at"] == body["created_at"]


def test_new_message_html_is_sanitised(client, make_user):
    _user, token = make_user()
    html = post(client, token, "<script>alert(1)</script> **b**").json["html"]
    assert "<script>" not in html and "<strong>b</strong>" in html


@pytest.mark.parametrize("body", [{}, {"source": ""}, {"source": 5}, {"source": None}, {"text": "x"}])
def test_new_message_bad_source_is_400(client, make_user, body):
    _user, token = make_user()
    response = client.post("/api/messages", json=body, headers=bearer(token))
    assert response.status_code == 400 and response.json["error"]


@pytest.mark.parametrize("raw", ["{oops", "[]", '"text"', ""])
def test_new_message_body_not_an_object_is_400(client, make_user, raw):
    _user, token = make_user()
    response = client.post("/api/messages", data=raw, content_type="application/json",
                           headers=bearer(token))
    assert response.status_code == 400 and response.is_json


def test_new_message_needs_a_valid_token(client):
    assert client.post("/api/messages", json={"source": "x"}).status_code == 401
    response = client.post("/api/messages", json={"source": "x"}, headers=bearer("bad"))
    assert response.status_code == 401 and response.json["error"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Authentication Required"'
    expired = issue_token(1, "ada", SECRET, ttl=1, now=time.time() - 10)
    assert post(client, expired).status_code == 401
    assert client.get("/api/messages").json["messages"] == []


def test_revoked_token_is_refused(app, client, make_user):
    _user, token = make_user()
    claims = decode_token(token, SECRET)
    app.extensions["revocation_store"].revoke(claims["jti"], claims["exp"])
    response = post(client, token)
    assert response.status_code == 401 and "revoked" in response.json["error"]


def test_token_of_an_unknown_user_is_401(client):
    response = post(client, issue_token(987654, "ghost", SECRET))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Authentication Required"'


def test_oversized_body_is_413_json(client, make_user):
    _user, token = make_user()
    response = post(client, token, "x" * (2 * 1024 * 1024))
    assert response.status_code == 413 and response.is_json


def test_posting_marks_the_user_online_in_users(client, make_user, users_url):
    user, token = make_user()
    assert requests.put(f"{users_url}/internal/users/{user['id']}/offline", timeout=10).status_code == 204
    assert requests.get(f"{users_url}/api/users/{user['id']}", timeout=10).json()["online"] is False
    assert post(client, token).status_code == 201
    shown = requests.get(f"{users_url}/api/users/{user['id']}", timeout=10).json()
    assert shown["online"] is True and shown["last_seen_at"] >= int(time.time()) - 2


def test_users_down_still_answers(tmp_path, etcd_server, make_user):
    _user, token = make_user()
    dead = f"http://127.0.0.1:{procs.free_port()}"
    app = create_app(service_config(tmp_path, etcd_server.url, STRANGLER_LB_URL=dead,
                                    DATABASE_URL=f"sqlite:///{tmp_path / 'down.sqlite'}"))
    try:
        client = app.test_client()
        created = post(client, token, "still here")
        assert created.status_code == 201, created.json
        listed = client.get("/api/messages", headers=bearer(token))
        assert listed.status_code == 200 and [m["source"] for m in listed.json["messages"]] == ["still here"]
    finally:
        app.extensions["link_expander"].shutdown(wait=True)


def test_etcd_down_is_503_json_not_500(tmp_path, users_url, make_user):
    _user, token = make_user()
    from router.etcd import Etcd
    from router.revocation import EtcdRevocationStore

    dead_store = EtcdRevocationStore(Etcd(f"http://127.0.0.1:{procs.free_port()}", timeout=0.5))
    app = create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "d"),
                      "JWT_SECRET_KEY": SECRET, "STRANGLER_LB_URL": users_url,
                      "REVOCATION_STORE": dead_store,
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'e.sqlite'}"})
    try:
        response = post(app.test_client(), token)
        assert response.status_code == 503 and response.json["error"]
        assert app.test_client().get("/api/messages").status_code == 200  # no token, no check
    finally:
        app.extensions["link_expander"].shutdown(wait=True)


# ------------------------------------------------------------------ listing


def test_get_messages_orders_by_updated_at(app, client, make_user):
    _user, token = make_user()
    ids = [post(client, token, f"m{i}").json["id"] for i in range(3)]
    now = int(time.time())
    set_updated_at(app, ids[0], now - 10)
    set_updated_at(app, ids[2], now - 20)
    assert [m["id"] for m in client.get("/api/messages").json["messages"]] == [ids[2], ids[0], ids[1]]


def test_get_messages_ties_are_ordered_by_id(app, client, make_user):
    _user, token = make_user()
    ids = [post(client, token, f"m{i}").json["id"] for i in range(3)]
    for message_id in ids:
        set_updated_at(app, message_id, int(time.time()) - 3)
    assert [m["id"] for m in client.get("/api/messages").json["messages"]] == ids


def test_get_messages_only_last_24_hours(app, client, make_user):
    _user, token = make_user()
    old, recent = (post(client, token, s).json["id"] for s in ("old", "recent"))
    set_updated_at(app, old, int(time.time()) - 25 * 3600)
    assert [m["id"] for m in client.get("/api/messages?updated_since=0").json["messages"]] == [recent]


def test_get_messages_updated_since_is_strictly_greater(app, client, make_user):
    _user, token = make_user()
    first, second = (post(client, token, s).json["id"] for s in ("a", "b"))
    now = int(time.time())
    set_updated_at(app, first, now - 5)
    set_updated_at(app, second, now - 4)
    listed = client.get(f"/api/messages?updated_since={now - 5}").json["messages"]
    assert [m["id"] for m in listed] == [second]


def test_get_messages_user_id_filter(client, make_user):
    ada, ada_token = make_user()
    _bob, bob_token = make_user()
    post(client, ada_token, "from ada")
    post(client, bob_token, "from bob")
    listed = client.get(f"/api/messages?user_id={ada['id']}").json["messages"]
    assert [m["source"] for m in listed] == ["from ada"]


@pytest.mark.parametrize("query", ["updated_since=x", "user_id=ada", "updated_since=" + "9" * 30])
def test_get_messages_bad_filters_are_400(client, query):
    response = client.get(f"/api/messages?{query}")
    assert response.status_code == 400 and response.json["error"]


def test_get_messages_bad_token_is_401(client):
    response = client.get("/api/messages", headers=bearer("nope"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Authentication Required"'


def test_get_message_200_404(client, make_user):
    _user, token = make_user()
    created = post(client, token).json
    assert client.get(f"/api/messages/{created['id']}").json == created
    for missing in ("12345", "0", "-1", "99999999999999999999", "abc"):
        response = client.get(f"/api/messages/{missing}")
        assert response.status_code == 404 and response.is_json


# ------------------------------------------------------------------ editing


def test_edit_message_by_author_is_204(client, make_user):
    _user, token = make_user()
    created = post(client, token, "typo").json
    response = client.put(f"/api/messages/{created['id']}", json={"source": "*fixed*"},
                          headers=bearer(token))
    assert response.status_code == 204 and response.data == b""
    shown = client.get(f"/api/messages/{created['id']}").json
    assert shown["source"] == "*fixed*" and shown["html"] == "<em>fixed</em>"


def test_edit_with_the_same_source_changes_nothing(app, client, make_user):
    _user, token = make_user()
    created = post(client, token, "same").json
    set_updated_at(app, created["id"], created["updated_at"] - 100)
    url = f"/api/messages/{created['id']}"
    assert client.put(url, json={"source": "same"}, headers=bearer(token)).status_code == 204
    assert client.get(url).json["updated_at"] == created["updated_at"] - 100
    assert client.put(url, json={"source": "new"}, headers=bearer(token)).status_code == 204
    assert client.get(url).json["updated_at"] >= created["updated_at"]


def test_edit_message_by_someone_else_is_403(client, make_user):
    _ada, ada_token = make_user()
    _bob, bob_token = make_user()
    created = post(client, ada_token, "mine").json
    response = client.put(f"/api/messages/{created['id']}", json={"source": "yours"},
                          headers=bearer(bob_token))
    assert response.status_code == 403 and response.json["error"]
    assert client.get(f"/api/messages/{created['id']}").json["source"] == "mine"


def test_edit_message_errors(client, make_user):
    _user, token = make_user()
    created = post(client, token).json
    url = f"/api/messages/{created['id']}"
    assert client.put(url, json={"source": "x"}).status_code == 401
    assert client.put("/api/messages/999", json={"source": "x"}, headers=bearer(token)).status_code == 404
    assert client.put("/api/messages/x", json={"source": "x"}, headers=bearer(token)).status_code == 404
    assert client.put(url, json={"source": 1}, headers=bearer(token)).status_code == 400
    assert client.put(url, json=["x"], headers=bearer(token)).status_code == 400
    assert client.put(url, data="{", content_type="application/json",
                      headers=bearer(token)).status_code == 400
    assert client.get(url).json["source"] == created["source"]


# ------------------------------------------------------- parity with the monolith


@pytest.fixture
def monolith_client(tmp_path):
    from monolith import create_app as create_monolith

    app = create_monolith({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "m"),
                           "DATABASE_URL": f"sqlite:///{tmp_path / 'monolith.sqlite'}",
                           "JWT_SECRET_KEY": SECRET})
    yield app.test_client()
    app.extensions["link_expander"].shutdown(wait=True)


ERROR_CASES = [
    ("POST", "/api/messages", {"json": {"source": "x"}}, None),
    ("POST", "/api/messages", {"json": {"source": 5}}, "token"),
    ("POST", "/api/messages", {"json": {}}, "token"),
    ("POST", "/api/messages", {"data": "[1]", "content_type": "application/json"}, "token"),
    ("POST", "/api/messages", {"data": "{x", "content_type": "application/json"}, "token"),
    ("POST", "/api/messages", {"json": {"source": "x"}}, "bad"),
    ("GET", "/api/messages?updated_since=soon", {}, None),
    ("GET", "/api/messages?user_id=1.5", {}, None),
    ("GET", "/api/messages/77", {}, None),
    ("GET", "/api/messages/seven", {}, None),
    ("PUT", "/api/messages/77", {"json": {"source": "x"}}, "token"),
    ("DELETE", "/api/messages/77", {}, "token"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "auth"), ERROR_CASES)
def test_errors_are_the_monoliths(client, monolith_client, make_user, method, path, kwargs, auth):
    user, _token = make_user()
    # the same user id in both: the monolith's database has its own users table
    for n in range(user["id"]):
        monolith_client.post("/api/users", json={"nickname": f"m{n}", "password": "pw"})
    token = {"token": issue_token(user["id"], f"m{user['id'] - 1}", SECRET), "bad": "bad", None: None}[auth]
    headers = bearer(token) if token else {}
    ours = client.open(path, method=method, headers=headers, **kwargs)
    theirs = monolith_client.open(path, method=method, headers=headers, **kwargs)
    assert (ours.status_code, ours.json) == (theirs.status_code, theirs.json)
    assert ours.headers.get("WWW-Authenticate") == theirs.headers.get("WWW-Authenticate")


# ------------------------------------------------------------ link expansion


class _Page(BaseHTTPRequestHandler):
    delay = 0.0

    def do_GET(self):  # noqa: N802 (http.server's naming)
        time.sleep(self.delay)
        body = (b"<html><head><title>Local page</title>"
                b'<meta name="description" content="A page for tests"></head><body>hi</body></html>')
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def page_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/page"
    server.shutdown()
    server.server_close()


def test_links_are_expanded_in_the_background(client, make_user, page_url):
    _user, token = make_user()
    created = post(client, token, f"look {page_url}").json
    assert "<blockquote>" not in created["html"]

    def expanded():
        shown = client.get(f"/api/messages/{created['id']}").json
        return shown if "<blockquote>" in shown["html"] else None

    shown = wait_for(expanded)
    assert shown["html"].endswith(
        f'<blockquote><p><a href="{page_url}">Local page</a></p><p>A page for tests</p></blockquote>'
    )
    assert shown["updated_at"] >= created["updated_at"]


def test_slow_link_does_not_stall_the_request(client, make_user, page_url):
    _Page.delay = 2.0
    try:
        _user, token = make_user()
        started = time.monotonic()
        assert post(client, token, f"slow {page_url}").status_code == 201
        assert time.monotonic() - started < 1.5
    finally:
        _Page.delay = 0.0


def test_production_refuses_loopback_links(tmp_path, etcd_server, users_url, make_user, page_url):
    app = create_app(service_config(tmp_path, etcd_server.url, STRANGLER_LB_URL=users_url,
                                    LINK_EXPANSION_ALLOW_PRIVATE="false",
                                    DATABASE_URL=f"sqlite:///{tmp_path / 'p.sqlite'}"))
    try:
        _user, token = make_user()
        post(app.test_client(), token, f"see {page_url}")
        expander = app.extensions["link_expander"]
        wait_for(lambda: expander.stats["refused"] == 1)
    finally:
        app.extensions["link_expander"].shutdown(wait=True)


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json["service"] == "messages"
