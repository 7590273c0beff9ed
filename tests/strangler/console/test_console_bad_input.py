"""Bad requests to a real `strangler console` over HTTP: a 4xx with one line of JSON, never an HTML page.

One console for the module (gunicorn, no stack behind it: every request
here is refused before a source would be written).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from strangler.stack import procs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
STRANGLER = str(Path(sys.executable).parent / "strangler")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with own_console(tmp_path_factory.mktemp("console"), (REPO / "strangler.toml").read_text()) as url:
        yield url


@pytest.fixture
def client(base: str) -> Iterator[requests.Session]:
    """A session holding the console's cookie, its CSRF token set on every request."""
    with requests.Session() as session:
        page = session.get(base + "/", timeout=10)
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        session.headers["X-CSRF-Token"] = token
        yield session


def one_line_error(answer: requests.Response, status: int) -> str:
    assert answer.status_code == status, answer.text[:200]
    assert answer.headers["Content-Type"].startswith("application/json"), answer.text[:200]
    (line,) = answer.text.strip().splitlines()
    body = json.loads(line)
    assert body["ok"] is False and body["error"]
    return body["error"]


def test_an_unknown_path_is_a_json_404(client: requests.Session, base: str) -> None:
    assert "/api/nope" in one_line_error(client.get(base + "/api/nope", timeout=10), 404)
    assert "/api/nope" in one_line_error(client.post(base + "/api/nope", json={}, timeout=10), 404)


def test_a_wrong_method_is_a_json_405(client: requests.Session, base: str) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        answer = client.request(method, base + "/api/flip", json={}, timeout=10)
        assert method in one_line_error(answer, 405)
        assert "POST" in answer.headers["Allow"]


def test_a_body_over_the_limit_is_a_json_413(client: requests.Session, base: str) -> None:
    huge = b'{"to": "' + b"x" * (1024 * 1024) + b'"}'
    answer = client.post(base + "/api/flip", data=huge, headers={"Content-Type": "application/json"},
                         timeout=30)
    assert "bytes" in one_line_error(answer, 413)


def test_json_of_the_wrong_shape_is_refused_in_one_line(client: requests.Session, base: str) -> None:
    for body in ([1, 2], "text", 3, None):
        one_line_error(client.post(base + "/api/flip", json=body, timeout=10), 400)
    not_json = client.post(base + "/api/rollback", data=b"\xff\xfe{",
                           headers={"Content-Type": "application/json"}, timeout=10)
    one_line_error(not_json, 400)
    deep = client.post(base + "/api/flip", data=b"[" * 30000 + b"]" * 30000,
                       headers={"Content-Type": "application/json"}, timeout=10)
    one_line_error(deep, 400)
    for body in ({"to": 5}, {"to": "users", "endpoints": {"GET /x": 1}}, {"to": "users", "endpoints": [1]},
                 {"to": "users", "endpoints": ["GET /x"] * 501}):
        one_line_error(client.post(base + "/api/flip", json=body, timeout=10), 409)
    for body in ({"to": 5}, {"to": "users", "endpoints": [1]}, {"to": "users", "endpoints": ["GET /x"] * 501}):
        one_line_error(client.post(base + "/api/promote", json=body, timeout=10), 409)
    for body in ({}, {"endpoints": "GET /x"}, {"service": 7}):
        one_line_error(client.post(base + "/api/promotions/abort", json=body, timeout=10), 409)
    for body in ({"change": "1"}, {"change": True}, {"change": 0}, {"change": 1.5}):
        assert "change id" in one_line_error(client.post(base + "/api/rollback", json=body, timeout=10), 409)


def test_missing_token_or_a_foreign_origin_or_host_is_a_json_403(client: requests.Session, base: str) -> None:
    assert "CSRF" in one_line_error(requests.post(base + "/api/flip", json={}, timeout=10), 403)
    foreign = client.post(base + "/api/flip", json={}, headers={"Origin": "http://evil.example"}, timeout=10)
    assert "cross-site" in one_line_error(foreign, 403)
    assert "127.0.0.1" in one_line_error(
        requests.get(base + "/api/state", headers={"Host": "evil.example"}, timeout=10), 403)


def test_a_malformed_host_header_is_refused_not_a_crash(base: str) -> None:
    port = int(base.rsplit(":", 1)[1])
    for host in ("[::1", "127.0.0.1:notaport", "a b"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET /api/state HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
        assert 400 <= status < 500, reply[:300]


@contextlib.contextmanager
def own_console(workdir: Path, plan_text: str, **env_extra: str) -> Iterator[str]:
    """A console of its own (its plan and environment), stopped on the way out; its URL."""
    (workdir / "strangler.toml").write_text(plan_text)
    env = {k: v for k, v in os.environ.items() if k != "STRANGLER_CONSOLE_PASSWORD"} | env_extra
    port = procs.free_port()
    proc = subprocess.Popen([STRANGLER, "console", "--port", str(port)], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_until(lambda: procs.http_ok(url + "/healthz"), 30, "strangler console")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


def test_with_one_thread_a_live_stream_does_not_take_the_pages_only_thread(tmp_path: Path) -> None:
    """STRANGLER_THREADS=1: a stream would hold the only thread for its whole lifetime, so the page's
    /api/state and every button would wait two minutes; it is answered 503 (the page polls) instead."""
    with own_console(tmp_path, (REPO / "strangler.toml").read_text(), STRANGLER_THREADS="1") as url:
        with requests.get(url + "/api/events", stream=True, timeout=10) as stream:
            assert stream.status_code == 503, stream.status_code
            assert requests.get(url + "/api/state", timeout=10).status_code == 200


def test_a_client_that_stops_reading_its_streams_gives_their_slots_back(tmp_path: Path) -> None:
    """Both streams taken by a client that keeps its connections but never reads: once the socket's
    buffers are full a write waits, and without a bound the thread and the slot were held past the
    stream's two minutes, for as long as the client liked. Bounded, the slots come back in seconds."""
    # a snapshot of ~1 MB (4000 long-named backends): a few writes fill the socket's buffers (the
    # sender's grows to 4 MB) past a 4 kB receive buffer
    extra = "".join(f'\n[backends.b{i:04d}{"x" * 200}]\ncommand = "sleep 60"\nhealth = "/healthz"\n'
                    for i in range(4000))
    # a write gives up after 2 s here (STRANGLER_CONSOLE_SEND_TIMEOUT; 10 s by default)
    with own_console(tmp_path, (REPO / "strangler.toml").read_text() + extra,
                     STRANGLER_CONSOLE_SEND_TIMEOUT="2") as url:
        port = int(url.rsplit(":", 1)[1])
        stuck = []
        try:
            for _ in range(2):  # the default 4 threads: 2 streams
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", port))
                sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                stuck.append(sock)

            def events_status() -> int:
                with requests.get(url + "/api/events", stream=True, timeout=10) as answer:
                    return answer.status_code

            procs.wait_until(lambda: events_status() == 503, 10, "both streams taken")
            # the page still polls meanwhile, and a slot comes back well before the 120 s lifetime
            assert requests.get(url + "/api/state", timeout=10).status_code == 200
            procs.wait_until(lambda: events_status() == 200, 60, "a stream slot given back")
        finally:
            for sock in stuck:
                sock.close()
