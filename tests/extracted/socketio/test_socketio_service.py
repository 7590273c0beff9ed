"""The socketio service over real HTTP, with real Socket.IO clients (websocket transport).

Everything is real and started once for the module: Redis (the message
queue), etcd (revocations), the users and messages services (served over
HTTP from threads) and the socketio service under its gunicorn command. A
small path dispatcher stands in for Traefik as the load balancer
(``/api/messages...`` to messages, the rest to users), so the services call
each other over real HTTP as on the platform.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from servers import Listener, serving

from monolith.models import SOURCE_MAX
from monolith.tokens import decode_token, issue_token
from router.revocation import EtcdRevocationStore
from strangler.stack import procs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent

SECRET = "jwt-" + uuid.uuid4().hex


def no_backend(environ, start_response):
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"no available server"]


def _late_dispatch(apps: dict):
    def dispatch(environ, start_response):
        target = "messages" if environ["PATH_INFO"].startswith("/api/messages") else "users"
        return apps[target](environ, start_response)

    return dispatch


def start_gunicorn(service: str, env: dict[str, str], log_path: Path) -> tuple[procs.Proc, str]:
    """Start *service* under its real gunicorn command on a free port; return (process, URL)."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "gunicorn"), "-c", f"python:extracted.{service}.gunicorn_conf",
            "--bind", f"127.0.0.1:{port}", f"extracted.{service}.wsgi:app"]
    proc = procs.Proc(name=service, argv=argv, log_path=log_path, env=env).start()
    try:
        procs.wait_until(lambda: procs.http_ok(f"{url}/healthz"), 40, service, proc=proc)
    except procs.StartupError:
        proc.stop()
        raise
    return proc, url


@pytest.fixture(scope="module")
def platform(redis_server, etcd_server, tmp_path_factory):
    """users and messages (threads), the load balancer they share, the socketio service (gunicorn)."""
    from extracted.messages import create_app as create_messages
    from extracted.users import create_app as create_users

    tmp = tmp_path_factory.mktemp("platform")
    apps: dict = {}
    with ExitStack() as stack:
        lb_url = stack.enter_context(serving(_late_dispatch(apps)))
        # opted in to previews of private addresses: the linked test page is on 127.0.0.1
        shared = {"STRANGLER_ENV": "testing", "JWT_SECRET_KEY": SECRET,
                  "LINK_EXPANSION_ALLOW_PRIVATE": "true",
                  "STRANGLER_ETCD": etcd_server.url, "STRANGLER_LB_URL": lb_url,
                  "SOCKETIO_MESSAGE_QUEUE": redis_server.url}

        def config(name: str) -> dict:
            return {**shared, "STRANGLER_DATA_DIR": str(tmp / name),
                    "DATABASE_URL": f"sqlite:///{tmp / name}.sqlite"}

        apps["users"] = create_users(config("users"))
        apps["messages"] = create_messages(config("messages"))
        stack.callback(apps["messages"].extensions["link_expander"].shutdown)
        proc, url = start_gunicorn("socketio", {**shared, "STRANGLER_DATA_DIR": str(tmp / "sio"),
                                               "STRANGLER_BACKEND": "socketio"},
                                   tmp / "socketio.log")
        stack.callback(proc.stop, 15)
        yield SimpleNamespace(lb=lb_url, apps=apps, socketio=url, redis=redis_server.url,
                              revocations=EtcdRevocationStore(etcd_server.client()))


@pytest.fixture
def connect(platform):
    """Open real Socket.IO clients to the socketio service; all are closed after the test."""
    opened: list[Listener] = []

    def open_client() -> Listener:
        opened.append(Listener(platform.socketio, timeout=15))
        return opened[-1]

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture
def make_user(platform):
    """Register a user through the load balancer; return (user dict, token)."""

    def make() -> tuple[dict, str]:
        nickname = "u" + uuid.uuid4().hex[:10]
        created = requests.post(f"{platform.lb}/api/users",
                                json={"nickname": nickname, "password": "pw"}, timeout=10)
        assert created.status_code == 201, created.text
        return created.json(), issue_token(created.json()["id"], nickname, SECRET)

    return make


def user_json(platform, user_id: int) -> dict:
    return requests.get(f"{platform.lb}/api/users/{user_id}", timeout=10).json()


def set_offline(platform, user_id: int) -> None:
    assert requests.put(f"{platform.lb}/internal/users/{user_id}/offline", timeout=10).status_code == 204


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """A local web page with a title, for link expansion."""
    body = b"<html><head><title>Strangler fig</title></head><body>fig</body></html>"

    def page(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    with serving(page) as url:
        yield f"{url}/fig.html"


# ------------------------------------------------------------------- pushes


def test_emit_from_another_emitter_reaches_clients(platform, connect):
    import redis
    from flask_socketio import SocketIO

    client = connect()
    payload = {"class": "User", "model": {"id": -1, "nickname": uuid.uuid4().hex}}
    # Redis keeps no message for a subscriber still to come: wait until the service listens
    queue = redis.Redis.from_url(platform.redis)
    try:
        wait_until(lambda: dict(queue.pubsub_numsub("flask-socketio")).get(b"flask-socketio", 0) >= 1)
    finally:
        queue.close()
    # an emitter with no app of its own: it only publishes to the Redis queue
    SocketIO(message_queue=platform.redis).emit("updated_model", payload)
    assert client.wait_for(lambda e: e == payload)


def test_message_posted_over_http_is_pushed_to_every_client(platform, connect, make_user):
    first, second = connect(), connect()
    _user, token = make_user()
    created = requests.post(f"{platform.lb}/api/messages", json={"source": "over *http*"},
                            headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    for client in (first, second):
        event = client.wait_for(lambda e: e["class"] == "Message" and e["model"]["id"] == created["id"])
        assert event["model"] == created


def test_edit_and_link_expansion_are_pushed(platform, connect, make_user, page_url):
    client = connect()
    _user, token = make_user()
    auth = {"Authorization": f"Bearer {token}"}
    created = requests.post(f"{platform.lb}/api/messages", json={"source": "typo"}, headers=auth,
                            timeout=10).json()
    edited = requests.put(f"{platform.lb}/api/messages/{created['id']}", headers=auth, timeout=10,
                          json={"source": f"see {page_url}"})
    assert edited.status_code == 204
    event = client.wait_for(lambda e: e["class"] == "Message" and e["model"]["id"] == created["id"]
                            and "<blockquote>" in e["model"]["html"])
    assert "Strangler fig" in event["model"]["html"]
    shown = requests.get(f"{platform.lb}/api/messages/{created['id']}", timeout=10).json()
    assert shown == event["model"]


# ---------------------------------------------------------------- ping_user


def test_ping_user_marks_online_and_acks(platform, connect, make_user):
    client = connect()
    user, token = make_user()
    set_offline(platform, user["id"])
    assert client.call("ping_user", token) == {"ok": True}
    shown = user_json(platform, user["id"])
    assert shown["online"] is True and shown["last_seen_at"] >= int(time.time()) - 2
    client.wait_for(lambda e: e["class"] == "User" and e["model"]["id"] == user["id"]
                    and e["model"]["online"])


@pytest.mark.parametrize("token", ["bad", None, 42, {"x": 1}])
def test_ping_user_bad_token_is_an_error_ack(connect, token):
    client = connect()
    ack = client.call("ping_user", token)
    assert set(ack) == {"error"} and ack["error"].startswith("invalid token")
    assert client.client.connected


def test_ping_user_revoked_token_is_refused(platform, connect, make_user):
    client = connect()
    _user, token = make_user()
    claims = decode_token(token, SECRET)
    platform.revocations.revoke(claims["jti"], claims["exp"])
    assert "revoked" in client.call("ping_user", token)["error"]


def test_ping_user_unknown_user_is_refused(connect):
    ack = connect().call("ping_user", issue_token(987654, "ghost", SECRET))
    assert ack == {"error": "token names a user that does not exist"}


# ------------------------------------------------------------- post_message


def test_post_message_over_socket_creates_it_in_messages(platform, connect, make_user):
    client = connect()
    user, token = make_user()
    ack = client.call("post_message", {"source": "hi *there*"}, token)
    assert ack["html"] == "hi <em>there</em>" and ack["user_id"] == user["id"]
    assert requests.get(f"{platform.lb}/api/messages/{ack['id']}", timeout=10).json() == ack
    event = client.wait_for(lambda e: e["class"] == "Message" and e["model"]["id"] == ack["id"])
    assert event["model"] == ack


@pytest.mark.parametrize("data", [{}, {"source": 3}, "text", None, [1]])
def test_post_message_bad_data_is_an_error_ack(platform, connect, make_user, data):
    user, token = make_user()
    ack = connect().call("post_message", data, token)
    assert set(ack) == {"error"} and ack["error"]
    listed = requests.get(f"{platform.lb}/api/messages?user_id={user['id']}", timeout=10).json()
    assert listed["messages"] == []


def test_post_message_past_the_cap_is_an_error_ack(platform, connect, make_user):
    _user, token = make_user()
    ack = connect().call("post_message", {"source": "x" * (SOURCE_MAX + 1)}, token)
    assert ack == {"error": f"source must be at most {SOURCE_MAX} characters"}


def test_post_message_bad_token_posts_nothing(platform, connect):
    client = connect()
    assert "error" in client.call("post_message", {"source": "x"}, "bad")
    assert "error" in client.client.call("post_message", {"source": "x"}, timeout=15)
    ghost = issue_token(987655, "ghost", SECRET)
    assert "error" in client.call("post_message", {"source": "x"}, ghost)
    listed = requests.get(f"{platform.lb}/api/messages?user_id=987655", timeout=10).json()
    assert listed["messages"] == []


def test_messages_down_is_an_error_ack(platform, connect, make_user):
    user, token = make_user()
    client = connect()
    working = platform.apps["messages"]
    platform.apps["messages"] = no_backend  # what Traefik answers when no instance is left
    try:
        ack = client.call("post_message", {"source": "lost"}, token)
    finally:
        platform.apps["messages"] = working
    assert set(ack) == {"error"} and "messages is unavailable" in ack["error"]
    assert client.client.connected
    assert user_json(platform, user["id"])["online"] is True  # users still answered


def test_users_down_is_not_a_refusal_and_disconnect_survives(platform, connect, make_user):
    _user, token = make_user()
    client, watcher = connect(), connect()
    assert client.call("ping_user", token) == {"ok": True}
    working = platform.apps["users"]
    platform.apps["users"] = no_backend
    try:
        ack = client.call("ping_user", token)
        # not a refused token: the browser client must not end the session
        assert "error" not in ack and ack["ok"] is False and "users is unavailable" in ack["unavailable"]
        client.close()
    finally:
        time.sleep(2)  # the disconnect's calls to users have given up by now
        platform.apps["users"] = working
    assert watcher.call("ping_user", token) == {"ok": True}  # the service itself is fine


# --------------------------------------------------------------- disconnect


def test_disconnect_marks_user_offline_and_pushes(platform, connect, make_user):
    user, token = make_user()
    watcher, leaving = connect(), connect()
    assert leaving.call("ping_user", token) == {"ok": True}
    leaving.close()
    wait_until(lambda: user_json(platform, user["id"])["online"] is False)
    watcher.wait_for(lambda e: e["class"] == "User" and e["model"]["id"] == user["id"]
                     and e["model"]["online"] is False)


def test_disconnect_keeps_user_online_while_another_socket_is_open(platform, connect, make_user):
    user, token = make_user()
    first, second = connect(), connect()
    assert first.call("ping_user", token) == second.call("ping_user", token) == {"ok": True}
    first.close()
    time.sleep(0.5)  # the disconnect has been handled by now
    assert user_json(platform, user["id"])["online"] is True
    second.close()
    wait_until(lambda: user_json(platform, user["id"])["online"] is False)


def test_disconnect_of_anonymous_socket_changes_nothing(platform, connect, make_user):
    user, token = make_user()
    watcher, anonymous = connect(), connect()
    assert watcher.call("ping_user", token) == {"ok": True}
    anonymous.close()
    time.sleep(0.5)
    assert user_json(platform, user["id"])["online"] is True


def test_healthz(platform):
    answer = requests.get(f"{platform.socketio}/healthz", timeout=10)
    assert answer.status_code == 200 and answer.json()["service"] == "socketio"
