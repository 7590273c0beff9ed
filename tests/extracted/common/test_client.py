"""``router.lbclient``: the LB client against real HTTP servers running in threads."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask

from extracted.common.service import make_app
from router.lbclient import LBClient, ServiceUnavailable, service_of


class Backend:
    """A real HTTP server whose next answers are scripted: a status, "drop" or ("sleep", s)."""

    def __init__(self) -> None:
        self.script: list = []
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                backend.seen.append((self.command, self.path, dict(self.headers)))
                action = backend.script.pop(0) if backend.script else 200
                if action == "drop":  # the backend got it, then the connection died
                    self.close_connection = True
                    return
                if isinstance(action, tuple):
                    time.sleep(action[1])
                    action = 200
                body = b'{"ok": true}'
                self.send_response(action)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend()
    yield server
    server.stop()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens here once closed


def fast_client(url: str, **kwargs) -> LBClient:
    options = {"retries": 4, "backoff": 0.01, "max_backoff": 0.05, "timeout": 2.0, "total_timeout": 5.0}
    options.update(kwargs)
    return LBClient(url, **options)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
def test_502_and_503_are_retried_until_success(backend, method):
    backend.script = [503, 502, 200]
    response = fast_client(backend.url).request(method, "/internal/users/1")
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert [m for m, _p, _h in backend.seen] == [method] * 3


def test_other_statuses_are_returned_at_once(backend):
    backend.script = [404]
    response = fast_client(backend.url).get("/api/users/9")
    assert response.status_code == 404
    assert len(backend.seen) == 1


def test_attempts_are_bounded(backend):
    backend.script = [503] * 50
    with pytest.raises(ServiceUnavailable, match="users is unavailable.*503"):
        fast_client(backend.url, retries=3).get("/internal/users/1")
    assert len(backend.seen) == 4


def test_total_time_is_bounded(backend):
    backend.script = [503] * 500
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        fast_client(backend.url, retries=1000, total_timeout=0.5).get("/x")
    assert time.monotonic() - started < 1.5
    assert 2 < len(backend.seen) < 500


def test_slow_backend_is_bounded_by_total_time(backend):
    backend.script = [("sleep", 1.0)] * 10
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="Timeout"):
        fast_client(backend.url, timeout=0.3, total_timeout=0.8).get("/slow")
    assert time.monotonic() - started < 2.0


def test_backoff_grows_between_attempts(backend):
    backend.script = [503, 503, 503, 200]
    started = time.monotonic()
    fast_client(backend.url, backoff=0.1, max_backoff=1.0).get("/x")
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4 - 0.05


def test_post_is_not_retried_once_a_backend_may_have_it(backend):
    backend.script = ["drop", 200]
    with pytest.raises(ServiceUnavailable):
        fast_client(backend.url).post("/internal/users/authenticate", json={})
    assert len(backend.seen) == 1


def test_post_is_not_retried_on_504(backend):
    backend.script = [504, 200]
    with pytest.raises(ServiceUnavailable, match="504"):
        fast_client(backend.url).post("/api/messages", json={})
    assert len(backend.seen) == 1


def test_get_is_retried_after_a_dropped_connection(backend):
    backend.script = ["drop", 504, 200]
    assert fast_client(backend.url).get("/api/users").status_code == 200
    assert len(backend.seen) == 3


def test_connection_refused_is_retried_then_unavailable():
    client = fast_client(closed_port_url(), retries=2)
    with pytest.raises(ServiceUnavailable, match="tokens is unavailable"):
        client.post("/api/tokens")


def test_post_reaches_a_backend_that_comes_up_during_retries():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    holder: dict = {}

    def start_later() -> None:
        time.sleep(0.3)
        handler = http.server.BaseHTTPRequestHandler

        class Created(handler):
            def do_POST(self) -> None:
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        holder["httpd"] = http.server.ThreadingHTTPServer(("127.0.0.1", port), Created)
        holder["httpd"].serve_forever()

    threading.Thread(target=start_later, daemon=True).start()
    try:
        client = LBClient(f"http://127.0.0.1:{port}", retries=10, backoff=0.05, max_backoff=0.2)
        assert client.post("/api/users", json={}).status_code == 201
    finally:
        while "httpd" not in holder:
            time.sleep(0.05)
        holder["httpd"].shutdown()
        holder["httpd"].server_close()


def test_relative_paths_resolve_against_the_load_balancer(backend):
    client = fast_client(backend.url + "/")
    client.get("/internal/users/7/seen?x=1")
    client.get("api/users")
    assert [p for _m, p, _h in backend.seen] == ["/internal/users/7/seen?x=1", "/api/users"]
    assert client.url("http://elsewhere:9/x") == "http://elsewhere:9/x"


def test_service_of_names_the_callee():
    assert service_of("/internal/users/3/seen") == "users"
    assert service_of("/api/messages?user_id=1") == "messages"


def test_authorization_is_forwarded_only_when_asked(backend):
    client = fast_client(backend.url)
    app = Flask(__name__)
    with app.test_request_context("/", headers={"Authorization": "Bearer abc"}):
        client.get("/one", forward_auth=True)
        client.get("/two")
    client.get("/three", forward_auth=True)  # no request: nothing to forward
    headers = [h for _m, _p, h in backend.seen]
    assert headers[0]["Authorization"] == "Bearer abc"
    assert "Authorization" not in headers[1] and "Authorization" not in headers[2]
    assert headers[0]["Accept"] == "application/json"


def test_service_unavailable_is_a_503_json_through_an_app(tmp_path):
    app = make_app("messages", {"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path),
                                "LB_CLIENT": fast_client(closed_port_url(), retries=1)})

    @app.get("/api/needs-users")
    def needs_users():
        return app.extensions["lb"].get("/internal/users/1").json()

    response = app.test_client().get("/api/needs-users")
    assert response.status_code == 503
    assert response.json == {"error": response.json["error"]}
    assert response.json["error"].startswith("users is unavailable")
    assert "Traceback" not in response.get_data(as_text=True)
