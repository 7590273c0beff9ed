"""The real monolith server: `strangler monolith` and the documented gunicorn command.

Every test talks to a separately started process over real HTTP and a real
Socket.IO client (websocket transport), the way a browser or Traefik would.
"""

from __future__ import annotations

import http.server
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import socketio

import strangler

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 40.0


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(cmd: list[str], env: dict[str, str], base: str, log: Path) -> subprocess.Popen:
    """Start `cmd` in its own process group and wait until `base`/healthz answers 200."""
    with log.open("wb") as out:
        # own session: stopping the group also stops gunicorn's workers
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop_server(proc)
    pytest.fail(f"server did not answer /healthz in {STARTUP_TIMEOUT}s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server's process group by its id: TERM, then KILL after 10 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stray workers, if any survived
    except ProcessLookupError:
        pass


def server_env(data_dir: Path) -> dict[str, str]:
    """Environment for a server that keeps everything under `data_dir`."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SOCKETIO_MESSAGE_QUEUE")}
    env["STRANGLER_DATA_DIR"] = str(data_dir)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `strangler monolith` process for the module; yields its base URL."""
    tmp = tmp_path_factory.mktemp("monolith")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "strangler"), "monolith", "--host", "127.0.0.1", "--port", str(port),
           "--database", f"sqlite:///{tmp}/m.sqlite"]
    proc = start_server(cmd, server_env(tmp), base, tmp / "server.log")
    try:
        yield base
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def page_server() -> Iterator[str]:
    """A local web page with a title and a description, for link expansion."""
    page = (b"<html><head><title>Strangler fig</title>"
            b'<meta name="description" content="A vine that grows around its host.">'
            b"</head><body>fig</body></html>")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/fig.html"
    finally:
        httpd.shutdown()
        httpd.server_close()


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


class Listener:
    """A real Socket.IO client that queues every `updated_model` it receives."""

    def __init__(self, base: str) -> None:
        self.events: queue.Queue = queue.Queue()
        self.client = socketio.Client(reconnection=False)
        self.client.on("updated_model", self.events.put)
        self.client.connect(base, transports=["websocket"], wait_timeout=10)

    def wait_for(self, match, timeout: float = 10.0) -> dict:
        """Return the first event for which `match(event)` is true, or fail."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            if match(event):
                return event
        pytest.fail(f"no matching updated_model event within {timeout}s")

    def close(self) -> None:
        self.client.disconnect()


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
    assert answer.json() == {"status": "ok", "version": strangler.__version__}


def test_index_serves_the_client_and_its_static_files(server: str) -> None:
    page = requests.get(f"{server}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', page.text)
    names = {a.rsplit("/", 1)[-1] for a in assets}
    assert {"app.js", "socketio.js", "style.css"} <= names
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
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(tmp_path)
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
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        assert len(workers.stdout.split()) == 2
    finally:
        stop_server(proc)
