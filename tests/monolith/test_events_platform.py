"""The monolith's Socket.IO ``post_message`` on the platform: it posts through the load balancer.

A real HTTP server stands in for Traefik's routing (``/api/messages`` to the
messages service, the rest to the users service); both services are real
apps on their own SQLite files. The monolith writes its users through to the
users database, so every backend knows the user.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from flack_helpers import bearer
from servers import serving

from extracted.messages import create_app as create_messages
from extracted.users import create_app as create_users
from router.lbclient import LBClient
from strangler.stack import procs

pytestmark = pytest.mark.integration

SECRET = "lb" * 32


@pytest.fixture
def services(tmp_path, etcd_server) -> Iterator[dict]:
    """The users and messages services behind one URL (routed by path, as Traefik would)."""
    apps: dict = {"messages_backend": None}  # a test may route messages to the monolith itself

    def lb(environ, start_response):
        name = "messages" if environ["PATH_INFO"].startswith("/api/messages") else "users"
        apps[name + "_hits"] = apps.get(name + "_hits", 0) + 1
        backend = (name == "messages" and apps["messages_backend"]) or apps[name]
        return backend(environ, start_response)

    with serving(lb) as url:
        common = {"STRANGLER_ENV": "testing", "JWT_SECRET_KEY": SECRET,
                  "STRANGLER_ETCD": etcd_server.url, "STRANGLER_LB_URL": url}
        for name in ("users", "messages"):
            factory = create_users if name == "users" else create_messages
            apps[name] = factory({**common, "STRANGLER_DATA_DIR": str(tmp_path / name),
                                  "DATABASE_URL": f"sqlite:///{tmp_path / f'{name}.sqlite'}"})
        apps["url"] = url
        yield apps
        apps["messages"].extensions["link_expander"].shutdown(wait=True)
        for name in ("users", "messages"):
            with apps[name].app_context():
                apps[name].extensions["sqlalchemy"].engine.dispose()


@pytest.fixture
def app_config(tmp_path, services) -> dict:
    """The monolith on the platform: the load balancer's URL, users written through."""
    return {
        "STRANGLER_ENV": "testing",
        "STRANGLER_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'flack.sqlite'}",
        "JWT_SECRET_KEY": SECRET,
        "STRANGLER_LB_URL": services["url"],
        "STRANGLER_WRITE_THROUGH": json.dumps({"users": [f"sqlite:///{tmp_path / 'users.sqlite'}"]}),
    }


def test_post_message_is_posted_through_the_load_balancer(client, sio, make_user, services):
    user, token = make_user("ada")
    ack = sio.emit("post_message", {"source": "hi *there*"}, token, callback=True)
    assert ack["html"] == "hi <em>there</em>" and ack["user_id"] == user["id"]
    on_service = services["messages"].test_client().get(f"/api/messages/{ack['id']}")
    assert on_service.status_code == 200 and on_service.json == ack
    # the monolith inserted nothing itself: one inserter of messages
    assert client.get("/api/messages").json["messages"] == []


def test_messages_not_flipped_the_monolith_serves_its_own_post(app, client, sio, make_user, services):
    services["messages_backend"] = app  # the load balancer routes POST /api/messages back here
    user, token = make_user("ada")
    ack = sio.emit("post_message", {"source": "mine"}, token, callback=True)
    assert ack.get("user_id") == user["id"], ack
    assert client.get(f"/api/messages/{ack['id']}").json == ack
    assert services["messages"].test_client().get(f"/api/messages/{ack['id']}").status_code == 404


def test_the_services_refusal_is_the_ack(sio, make_user, services):
    _user, token = make_user("ada")
    direct = services["messages"].test_client().post(
        "/api/messages", json={"source": "   "}, headers=bearer(token))
    assert direct.status_code == 400
    assert sio.emit("post_message", {"source": "   "}, token, callback=True) == direct.json


@pytest.mark.parametrize("data", ["text", None, [1]])
def test_bad_data_or_token_never_leaves_the_monolith(sio, make_user, services, data):
    _user, token = make_user("ada")
    assert "error" in sio.emit("post_message", data, token, callback=True)
    assert "error" in sio.emit("post_message", {"source": "x"}, "bad", callback=True)
    assert services.get("messages_hits", 0) == 0


def test_load_balancer_down_is_an_error_ack_in_bounded_time(app, client, sio, make_user):
    _user, token = make_user("ada")
    dead = f"http://127.0.0.1:{procs.free_port()}"
    app.extensions["lb"] = LBClient(dead, retries=2, backoff=0.05, total_timeout=2.0)
    started = time.monotonic()
    ack = sio.emit("post_message", {"source": "x"}, token, callback=True)
    assert "messages is unavailable" in ack["error"]
    assert time.monotonic() - started < 3
    assert client.get("/api/messages").json["messages"] == []
