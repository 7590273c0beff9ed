"""The real monolith server: `strangler monolith` and the documented gunicorn command.

Every test talks to a separately started process over real HTTP and a real
Socket.IO client (websocket transport), the way a browser or Traefik would.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import socketio
from hostile import hostile_source
from servers import Listener, child_env, monolith_server, serving_page, start_server, stop_server

import strangler
from monolith.models import SOURCE_MAX
from strangler.stack import procs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `strangler monolith` process for the module; yields its base URL.

    It opts in to previews of private addresses: the linked test page is on 127.0.0.1.
    """
    with monolith_server(tmp_path_factory.mktemp("monolith"), LINK_EXPANSION_ALLOW_PRIVATE="true") as base:
        yield base


@pytest.fixture(scope="module")
def page_server() -> Iterator[str]:
    """A local web page with a title and a description, for link expansion."""
    page = (b"<html><head><title>Strangler fig</title>"
            b'<meta name="description" content="A vine that grows around its host.">'
            b"</head><body>fig</body></html>")
    with serving_page(page, "/fig.html") as url:
        yield url


def new_nickname() -> str:
    return "u" + uuid.uuid4().hex[:12]


def register_and_login(base: str, nickname: str, password: str = "s3cret") -> str:
    """Register `nickname` and return a fresh token for it."""
    created = requests.post(f"{base}/api/users", json={"nickname": nickname, "password": password},
                            timeout=10)
    assert created.status_code == 201, created.text
    answer = requests.post(f"{base}/api/tokens", auth=(nickname, password), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


@pytest.fixture
def listener(server: str) -> Iterator[Listener]:
    client = Listener(server)
    try:
        yield client
    finally:
        client.close()


def is_message(source: str):
    return lambda e: e.get("class") == "Message" and e["model"].get("source") == source


def test_healthz_reports_ok_and_version(server: str) -> None:
    answer = requests.get(f"{server}/healthz", timeout=10)
    assert answer.status_code == 200
    # run alone (strangler monolith): no release label is given
    assert answer.json() == {"status": "ok", "version": strangler.__version__, "release": ""}


def test_index_serves_the_client_and_its_static_files(server: str) -> None:
    page = requests.get(f"{server}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert f'maxlength="{SOURCE_MAX}"' in page.text  # the composer stops at the API's cap
    assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', page.text)
    names = {a.rsplit("/", 1)[-1] for a in assets}
    assert {"app.js", "socket.io.min.js", "style.css"} <= names
    for asset in assets:
        answer = requests.get(server + asset, timeout=10)
        assert answer.status_code == 200, asset
        kind = "css" if asset.endswith(".css") else "javascript"
        assert kind in answer.headers["Content-Type"], asset
        assert len(answer.content) > 100, asset


def test_http_post_is_pushed_to_socket_clients(server: str, listener: Listener) -> None:
    nickname = new_nickname()
    token = register_and_login(server, nickname)
    source = f"hello *world* {uuid.uuid4().hex[:6]}"
    posted = requests.post(f"{server}/api/messages", json={"source": source},
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert posted.status_code == 201, posted.text
    event = listener.wait_for(is_message(source))
    assert "<em>world</em>" in event["model"]["html"]
    user_id = int(event["model"]["user_id"])
    author = requests.get(f"{server}/api/users/{user_id}", timeout=10).json()
    assert author["nickname"] == nickname


def test_post_message_over_socket_is_stored(server: str, listener: Listener) -> None:
    token = register_and_login(server, new_nickname())
    source = f"over the socket {uuid.uuid4().hex[:6]}"
    listener.client.emit("post_message", ({"source": source}, token))
    listener.wait_for(is_message(source))
    messages = requests.get(f"{server}/api/messages", timeout=10).json()["messages"]
    assert source in [m["source"] for m in messages]


def test_link_expansion_is_pushed_when_done(server: str, listener: Listener,
                                            page_server: str) -> None:
    token = register_and_login(server, new_nickname())
    source = f"look at {page_server}?{uuid.uuid4().hex[:6]}"
    posted = requests.post(f"{server}/api/messages", json={"source": source},
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert posted.status_code == 201, posted.text
    expanded = listener.wait_for(
        lambda e: is_message(source)(e) and "<blockquote>" in e["model"]["html"], timeout=15)
    assert "Strangler fig" in expanded["model"]["html"]
    assert "A vine that grows around its host." in expanded["model"]["html"]


def test_message_past_the_cap_is_400_over_http_and_an_error_ack_over_socketio(
        server: str, listener: Listener) -> None:
    token = register_and_login(server, new_nickname())
    auth = {"Authorization": f"Bearer {token}"}
    too_long = "[" * (SOURCE_MAX + 1)
    posted = requests.post(f"{server}/api/messages", json={"source": too_long}, headers=auth, timeout=10)
    assert posted.status_code == 400
    assert posted.json() == {"error": f"source must be at most {SOURCE_MAX} characters"}
    assert listener.call("post_message", {"source": too_long}, token) == posted.json()
    hostile = hostile_source("[")
    accepted = requests.post(f"{server}/api/messages", json={"source": hostile}, headers=auth, timeout=10)
    assert accepted.status_code == 201 and accepted.json()["html"].startswith("[[[")
    edited = requests.put(f"{server}/api/messages/{accepted.json()['id']}", json={"source": too_long},
                          headers=auth, timeout=10)
    assert edited.status_code == 400 and edited.json() == posted.json()


def test_loopback_link_gets_no_preview_by_default(tmp_path: Path, page_server: str) -> None:
    # "" is unset: the profile's default, whatever the calling shell exports
    with monolith_server(tmp_path, LINK_EXPANSION_ALLOW_PRIVATE="") as base:
        token = register_and_login(base, new_nickname())
        posted = requests.post(f"{base}/api/messages", json={"source": f"see {page_server}"},
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert posted.status_code == 201, posted.text
        # the guard's refusal is the expansion's end: nothing is stored after it
        log = tmp_path / "server.log"
        procs.wait_until(lambda: f"link expansion refused {page_server}" in log.read_text(), 10,
                         "the SSRF guard's refusal in the server log", log_path=log)
        shown = requests.get(f"{base}/api/messages/{posted.json()['id']}", timeout=10).json()
        assert "<blockquote>" not in shown["html"] and "Strangler fig" not in shown["html"]


def test_socket_disconnect_marks_user_offline(server: str, listener: Listener) -> None:
    nickname = new_nickname()
    token = register_and_login(server, nickname)
    other = socketio.Client(reconnection=False)
    other.connect(server, transports=["websocket"], wait_timeout=10)
    try:
        # call() waits for the server's ack, so the ping is handled before we leave
        other.call("ping_user", token, timeout=10)
        listener.wait_for(lambda e: e.get("class") == "User"
                          and e["model"]["nickname"] == nickname and e["model"]["online"])
    finally:
        other.disconnect()
    listener.wait_for(lambda e: e.get("class") == "User"
                      and e["model"]["nickname"] == nickname and not e["model"]["online"])
    users = requests.get(f"{server}/api/users?online=1", timeout=10).json()["users"]
    assert nickname not in [u["nickname"] for u in users]


def test_gunicorn_production_command_serves_with_two_workers(tmp_path: Path) -> None:
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    env = child_env(tmp_path)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/g.sqlite"
    env["SECRET_KEY"] = "test-secret-" + uuid.uuid4().hex
    env["JWT_SECRET_KEY"] = "test-jwt-secret-" + uuid.uuid4().hex
    cmd = [str(BIN / "gunicorn"), "-c", "python:monolith.gunicorn_conf", "monolith.wsgi:app",
           "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    proc = start_server(cmd, env, base, tmp_path / "gunicorn.log")
    try:
        # several requests so both workers get some; each must see the same database
        token = register_and_login(base, new_nickname())
        for n in range(6):
            posted = requests.post(f"{base}/api/messages", json={"source": f"m{n}"},
                                   headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert posted.status_code == 201, posted.text
        for _ in range(6):
            sources = [m["source"] for m in
                       requests.get(f"{base}/api/messages", timeout=10).json()["messages"]]
            assert sorted(sources) == [f"m{n}" for n in range(6)]
        assert requests.get(f"{base}/", timeout=10).status_code == 200
        # healthz answers once one worker is up; the master may fork the second a moment later
        procs.wait_until(lambda: len(subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()) == 2,
            20, "the second worker")
    finally:
        stop_server(proc)
