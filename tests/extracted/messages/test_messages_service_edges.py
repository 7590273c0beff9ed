"""The messages service at its edges: users or etcd down, parity of errors with the monolith,
link expansion off the request path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from messages_helpers import SECRET, bearer, post, service_config, wait_for
from servers import serving_page

from extracted.messages import create_app
from monolith.tokens import issue_token
from router.lbclient import LBClient
from strangler.stack import procs

pytestmark = pytest.mark.integration


# ---------------------------------------------------------- other parts down


def test_users_down_still_answers(tmp_path, etcd_server, make_user):
    _user, token = make_user()
    dead = f"http://127.0.0.1:{procs.free_port()}"
    # the client gives up after one retry, not the default eight (5.5 s of back-off per call)
    app = create_app(service_config(tmp_path, etcd_server.url, STRANGLER_LB_URL=dead,
                                    LB_CLIENT=LBClient(dead, retries=1),
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


PAGE = (b"<html><head><title>Local page</title>"
        b'<meta name="description" content="A page for tests"></head><body>hi</body></html>')


@pytest.fixture
def page_url() -> Iterator[str]:
    """A local page; its ``/slow`` twin answers after 2 s."""
    with serving_page(PAGE, "/page", slow_delay=2.0) as url:
        yield url


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
    _user, token = make_user()
    started = time.monotonic()
    slow = page_url.replace("/page", "/slow")
    assert post(client, token, f"slow {slow}").status_code == 201
    assert time.monotonic() - started < 1.5


def test_loopback_links_are_refused_by_default(tmp_path, etcd_server, users_url, make_user, page_url):
    app = create_app(service_config(tmp_path, etcd_server.url, STRANGLER_LB_URL=users_url,
                                    DATABASE_URL=f"sqlite:///{tmp_path / 'p.sqlite'}"))
    try:
        _user, token = make_user()
        post(app.test_client(), token, f"see {page_url}")
        expander = app.extensions["link_expander"]
        wait_for(lambda: expander.stats["refused"] == 1)
    finally:
        app.extensions["link_expander"].shutdown(wait=True)

