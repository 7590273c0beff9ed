"""Socket.IO: ``ping_user``, ``post_message``, disconnects, the offline sweep and pushes."""

from __future__ import annotations

import time

import pytest
from flack_helpers import bearer, pushes

from monolith import db, socketio
from monolith.events import mark_inactive_users_offline, start_offline_task
from monolith.models import User


def set_presence(app, user_id, online, last_seen_at):
    with app.app_context():
        db.session.execute(
            db.update(User).where(User.id == user_id).values(online=online, last_seen_at=last_seen_at)
        )
        db.session.commit()


def user_json(client, user_id):
    return client.get(f"/api/users/{user_id}").json


def test_registration_is_pushed(client, sio):
    created = client.post("/api/users", json={"nickname": "ada", "password": "pw"}).json
    assert pushes(sio, "User") == [created]


def test_message_post_and_edit_are_pushed(client, sio, make_user):
    _user, token = make_user("ada")
    sio.get_received()
    created = client.post("/api/messages", json={"source": "one"}, headers=bearer(token)).json
    client.put(f"/api/messages/{created['id']}", json={"source": "two"}, headers=bearer(token))
    messages = pushes(sio, "Message")
    assert [m["source"] for m in messages] == ["one", "two"]
    assert messages[0] == created


def test_failed_change_is_not_pushed(client, sio, make_user):
    make_user("ada")
    sio.get_received()
    client.post("/api/users", json={"nickname": "ada", "password": "pw"})  # duplicate
    assert pushes(sio) == []


def test_every_client_gets_the_push(app, client, sio, make_user):
    other = socketio.test_client(app)
    try:
        created = client.post("/api/users", json={"nickname": "ada", "password": "pw"}).json
        assert pushes(other, "User") == [created]
        assert pushes(sio, "User") == [created]
    finally:
        other.disconnect()


def test_ping_user_marks_online_and_acks(app, client, sio, make_user):
    user, token = make_user("ada")
    set_presence(app, user["id"], False, 0)
    assert sio.emit("ping_user", token, callback=True) == {"ok": True}
    shown = user_json(client, user["id"])
    assert shown["online"] is True and shown["last_seen_at"] >= int(time.time()) - 1
    assert any(m["id"] == user["id"] and m["online"] for m in pushes(sio, "User"))


@pytest.mark.parametrize("token", ["bad", None, 42, {"x": 1}])
def test_ping_user_bad_token_is_an_error_ack(sio, token):
    ack = sio.emit("ping_user", token, callback=True)
    assert "error" in ack
    assert sio.is_connected()


def test_ping_user_revoked_token_is_refused(client, sio, make_user):
    _user, token = make_user("ada")
    client.delete("/api/tokens", headers=bearer(token))
    assert "revoked" in sio.emit("ping_user", token, callback=True)["error"]


def test_post_message_over_socket(client, sio, make_user):
    user, token = make_user("ada")
    ack = sio.emit("post_message", {"source": "hi *there*"}, token, callback=True)
    assert ack["html"] == "hi <em>there</em>" and ack["user_id"] == user["id"]
    assert client.get(f"/api/messages/{ack['id']}").json == ack
    assert [m["id"] for m in pushes(sio, "Message")] == [ack["id"]]


@pytest.mark.parametrize("data", [{}, {"source": 3}, "text", None, [1]])
def test_post_message_bad_data_is_an_error_ack(client, sio, make_user, data):
    _user, token = make_user("ada")
    assert "error" in sio.emit("post_message", data, token, callback=True)
    assert client.get("/api/messages").json["messages"] == []


def test_post_message_bad_token_posts_nothing(client, sio):
    assert "error" in sio.emit("post_message", {"source": "x"}, "bad", callback=True)
    assert "error" in sio.emit("post_message", {"source": "x"}, callback=True)
    assert client.get("/api/messages").json["messages"] == []


def test_disconnect_marks_user_offline_and_pushes(app, client, make_user):
    user, token = make_user("ada")
    watcher = socketio.test_client(app)
    leaving = socketio.test_client(app)
    try:
        leaving.emit("ping_user", token, callback=True)
        watcher.get_received()
        leaving.disconnect()
        assert user_json(client, user["id"])["online"] is False
        assert [m["online"] for m in pushes(watcher, "User") if m["id"] == user["id"]] == [False]
    finally:
        watcher.disconnect()


def test_disconnect_keeps_user_online_while_another_socket_is_open(app, client, make_user):
    user, token = make_user("ada")
    first, second = socketio.test_client(app), socketio.test_client(app)
    first.emit("ping_user", token, callback=True)
    second.emit("ping_user", token, callback=True)
    first.disconnect()
    assert user_json(client, user["id"])["online"] is True
    second.disconnect()
    assert user_json(client, user["id"])["online"] is False


def test_disconnect_of_anonymous_socket_changes_nothing(app, client, sio, make_user):
    user, _token = make_user("ada")
    anonymous = socketio.test_client(app)
    sio.get_received()
    anonymous.disconnect()
    assert user_json(client, user["id"])["online"] is True
    assert pushes(sio) == []


def test_mark_inactive_users_offline(app, client, sio, make_user):
    idle, _ = make_user("idle")
    active, _ = make_user("active")
    now = time.time()
    set_presence(app, idle["id"], True, int(now) - 61)
    set_presence(app, active["id"], True, int(now) - 30)
    sio.get_received()
    with app.app_context():
        assert mark_inactive_users_offline(now) == [idle["id"]]
        assert mark_inactive_users_offline(now) == []
    assert user_json(client, idle["id"])["online"] is False
    assert user_json(client, active["id"])["online"] is True
    assert [(m["id"], m["online"]) for m in pushes(sio, "User")] == [(idle["id"], False)]


def test_offline_task_runs_in_the_background(tmp_path, make_user):
    from monolith import create_app, events

    app = create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "d"),
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'bg.sqlite'}",
                      "ONLINE_TIMEOUT": "1", "OFFLINE_CHECK_INTERVAL": "0.2"})
    started_before = events._offline_task_started
    events._offline_task_started = False
    try:
        client = app.test_client()
        client.post("/api/users", json={"nickname": "ada", "password": "pw"})
        from flack_helpers import basic_auth

        client.post("/api/tokens", headers=basic_auth("ada", "pw"))
        assert start_offline_task(app) is True
        assert start_offline_task(app) is False  # once per process
        deadline = time.monotonic() + 5
        while client.get("/api/users/1").json["online"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/api/users/1").json["online"] is False
    finally:
        app.extensions["offline_task_stop"].set()
        events._offline_task_started = started_before
        app.extensions["link_expander"].shutdown()


def _start_monolith(port, env, cwd):
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.Popen(
        [str(Path(sys.executable).parent / "strangler"), "monolith", "--port", str(port),
         "--threads", "8"],
        env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _wait_healthy(port, proc, timeout=30.0):
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, "monolith did not come up"
            time.sleep(0.2)


@pytest.mark.integration
def test_pushes_cross_processes_through_the_message_queue(redis_server, tmp_path):
    import os
    import threading

    import requests
    import socketio as socketio_client

    from strangler.stack import procs

    env = {**os.environ, "STRANGLER_ENV": "development", "STRANGLER_DATA_DIR": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite'}",
           "SOCKETIO_MESSAGE_QUEUE": redis_server.url}
    ports = [procs.free_port(), procs.free_port()]
    servers = [_start_monolith(port, env, tmp_path) for port in ports]
    listener = socketio_client.Client()
    try:
        for port, proc in zip(ports, servers, strict=True):
            _wait_healthy(port, proc)
        received = threading.Event()
        listener.on("updated_model", lambda data: received.set() if data["class"] == "User" else None)
        listener.connect(f"http://127.0.0.1:{ports[1]}", transports=["websocket"])
        answer = requests.post(f"http://127.0.0.1:{ports[0]}/api/users",
                               json={"nickname": "far", "password": "pw"}, timeout=10)
        assert answer.status_code == 201
        assert received.wait(10), "the push from the first process never reached the second"
    finally:
        listener.disconnect()
        for proc in servers:
            proc.terminate()
            proc.communicate(timeout=20)
