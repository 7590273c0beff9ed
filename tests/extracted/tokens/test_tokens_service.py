"""The tokens service: log in through a real users service over HTTP, revoke in a real etcd.

The users service runs in a thread behind a real HTTP server and stands in
for the load balancer; a monolith app with the same secret and etcd checks
that tokens are accepted and refused the same way everywhere.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
from werkzeug.serving import make_server

from extracted.tokens import create_app
from monolith.tokens import decode_token
from router.lbclient import LBClient

pytestmark = pytest.mark.integration

SECRET = "t" * 64
BASIC = 'Basic realm="Authentication Required"'
BEARER = 'Bearer realm="Authentication Required"'


def settings(tmp, etcd_url, **extra):
    return {"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp), "JWT_SECRET_KEY": SECRET,
            "STRANGLER_ETCD": etcd_url, **extra}


@pytest.fixture(scope="module")
def users_url(tmp_path_factory, etcd_server):
    """The users service over real HTTP (port 0), as the load balancer would reach it."""
    from extracted.users import create_app as create_users

    tmp = tmp_path_factory.mktemp("users")
    app = create_users(settings(tmp, etcd_server.url, DATABASE_URL=f"sqlite:///{tmp / 'u.sqlite'}"))
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def client(tmp_path_factory, etcd_server, users_url):
    app = create_app(settings(tmp_path_factory.mktemp("tokens"), etcd_server.url,
                              STRANGLER_LB_URL=users_url))
    return app.test_client()


@pytest.fixture(scope="module")
def monolith(tmp_path_factory, etcd_server):
    """A monolith app sharing the secret and the etcd revocation store."""
    from monolith import create_app as create_monolith
    from monolith import db

    tmp = tmp_path_factory.mktemp("monolith")
    app = create_monolith(settings(tmp, etcd_server.url, DATABASE_URL=f"sqlite:///{tmp / 'm.sqlite'}"))
    yield app
    app.extensions["link_expander"].shutdown(wait=True)
    with app.app_context():
        db.engine.dispose()


def register(users_url, nickname, password="pw"):
    response = requests.post(f"{users_url}/api/users", json={"nickname": nickname, "password": password},
                             timeout=5)
    assert response.status_code == 201, response.text
    return response.json()


def copy_user_to(monolith, user):
    """Give the monolith the same user row (same id), as a data copy would."""
    from monolith import db
    from monolith.models import User

    with monolith.app_context():
        db.session.add(User(id=user["id"], nickname=user["nickname"], password="unused"))
        db.session.commit()


def login(client, nickname, password="pw"):
    import base64

    raw = base64.b64encode(f"{nickname}:{password}".encode()).decode()
    return client.post("/api/tokens", headers={"Authorization": f"Basic {raw}"})


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_token_is_a_jwt_for_the_user_and_marks_them_online(client, users_url):
    user = register(users_url, "ada")
    response = login(client, "ada")
    assert response.status_code == 200 and set(response.json) == {"token"}
    claims = decode_token(response.json["token"], SECRET)
    assert claims["sub"] == str(user["id"]) and claims["nickname"] == "ada"
    assert claims["exp"] - claims["iat"] == pytest.approx(3600)
    assert requests.get(f"{users_url}/api/users/{user['id']}", timeout=5).json()["online"] is True


def test_token_is_accepted_by_users_and_by_the_monolith(client, users_url, monolith):
    user = register(users_url, "bob")
    copy_user_to(monolith, user)
    token = login(client, "bob").json["token"]
    assert requests.get(f"{users_url}/api/users", headers=bearer(token), timeout=5).status_code == 200
    assert monolith.test_client().get("/api/users", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("headers", [{"Authorization": "Basic Y3k6d3Jvbmc="},  # cy:wrong
                                     {"Authorization": "Basic bm9ib2R5OnB3"},  # nobody:pw
                                     {}, {"Authorization": "Basic !!!notbase64"},
                                     {"Authorization": "Bearer something"},
                                     {"Authorization": "Basic Y3kAOnB3"}])  # "cy\0": text users refuses
def test_bad_credentials_answer_exactly_as_the_monolith(client, users_url, monolith, headers):
    if not any(u["nickname"] == "cy" for u in requests.get(f"{users_url}/api/users", timeout=5).json()["users"]):
        register(users_url, "cy")
        monolith.test_client().post("/api/users", json={"nickname": "cy", "password": "pw"})
    ours = client.post("/api/tokens", headers=headers)
    theirs = monolith.test_client().post("/api/tokens", headers=headers)
    assert ours.status_code == theirs.status_code == 401
    assert ours.headers["WWW-Authenticate"] == theirs.headers["WWW-Authenticate"] == BASIC
    assert ours.json == theirs.json


def test_revoked_token_is_refused_everywhere_within_a_second(client, users_url, monolith):
    user = register(users_url, "di")
    copy_user_to(monolith, user)
    token = login(client, "di").json["token"]
    other = login(client, "di").json["token"]
    assert client.delete("/api/tokens", headers=bearer(token)).status_code == 204
    started = time.monotonic()
    users_answer = requests.get(f"{users_url}/api/users", headers=bearer(token), timeout=5)
    monolith_answer = monolith.test_client().get("/api/users", headers=bearer(token))
    again = client.delete("/api/tokens", headers=bearer(token))
    assert time.monotonic() - started < 1.0
    assert users_answer.status_code == monolith_answer.status_code == again.status_code == 401
    assert "revoked" in users_answer.json()["error"] and users_answer.headers["WWW-Authenticate"] == BEARER
    assert requests.get(f"{users_url}/api/users", headers=bearer(other), timeout=5).status_code == 200


def test_revoking_needs_a_valid_token(client):
    response = client.delete("/api/tokens")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == BEARER
    assert client.delete("/api/tokens", headers=bearer("garbage")).status_code == 401


def test_token_of_a_user_users_does_not_know_is_refused(client):
    from monolith.tokens import issue_token

    response = client.delete("/api/tokens", headers=bearer(issue_token(987654, "ghost", SECRET)))
    assert response.status_code == 401 and "does not exist" in response.json["error"]


def test_wrong_method_is_405_json(client):
    response = client.get("/api/tokens")
    assert response.status_code == 405 and response.is_json and "POST" in response.headers["Allow"]


@pytest.fixture(scope="module")
def orphan(tmp_path_factory, etcd_server):
    """A tokens service whose load balancer finds no users service at all."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lb = LBClient(f"http://127.0.0.1:{port}", retries=3, backoff=0.05, total_timeout=2.0)
    return create_app(settings(tmp_path_factory.mktemp("orphan"), etcd_server.url, LB_CLIENT=lb)).test_client()


def test_users_down_is_a_503_json_never_a_500(orphan):
    started = time.monotonic()
    response = login(orphan, "ada")
    assert response.status_code == 503
    assert response.json["error"].startswith("users is unavailable")
    assert time.monotonic() - started < 3.0


def test_log_out_still_revokes_while_users_is_down(orphan, client, users_url):
    register(users_url, "ed")
    token = login(client, "ed").json["token"]
    assert orphan.delete("/api/tokens", headers=bearer(token)).status_code == 204
    assert requests.get(f"{users_url}/api/users", headers=bearer(token), timeout=5).status_code == 401


@pytest.fixture(scope="module")
def misrouted(tmp_path_factory, etcd_server, monolith):
    """A tokens service whose load balancer sends /internal/ to the monolith (no route for users)."""
    httpd = make_server("127.0.0.1", 0, monolith, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    app = create_app(settings(tmp_path_factory.mktemp("misrouted"), etcd_server.url,
                              STRANGLER_LB_URL=f"http://127.0.0.1:{httpd.server_port}"))
    yield app
    httpd.shutdown()


def test_a_misrouted_users_call_is_503_not_a_wrong_password(misrouted):
    response = login(misrouted.test_client(), "ada")
    assert response.status_code == 503 and "404" in response.json["error"]


def test_mark_seen_tells_a_misroute_from_an_unknown_user(misrouted):
    from extracted.common.auth import mark_seen
    from monolith.tokens import issue_token
    from router.lbclient import ServiceUnavailable

    claims = decode_token(issue_token(5, "x", SECRET), SECRET)
    with misrouted.test_request_context("/api/tokens"), pytest.raises(ServiceUnavailable, match="routed"):
        mark_seen(claims)
