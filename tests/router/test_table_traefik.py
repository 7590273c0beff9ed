"""router.table through a real Traefik reading etcd: the derived keys really route."""

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from router import table
from router.keys import Route, parse_endpoint

pytestmark = pytest.mark.integration

ENDPOINTS = ["GET /api/users", "GET /api/users/<int:id>", "POST /api/users", "POST /api/tokens"]
USERS = parse_endpoint("GET /api/users/<id>")
LIST = parse_endpoint("GET /api/users")


def set_route(route):
    def change(routes):
        routes[route.endpoint] = route
        return routes

    return change


class Backend(ThreadingHTTPServer):
    """A tiny HTTP backend answering its own name (and counting its hits)."""

    def __init__(self, name: str) -> None:
        self.name, self.hits = name, []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                backend.hits.append((self.command, self.path))
                body = backend.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_POST = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def traefik_url(kv_url, tmp_path_factory):
    """Real Traefik reading the module's etcd; yields (web URL, API URL)."""
    base = tmp_path_factory.mktemp("traefik")
    web, api = free_port(), free_port()
    static = {
        "entryPoints": {
            "web": {"address": f"127.0.0.1:{web}"},
            "traefik": {"address": f"127.0.0.1:{api}"},
        },
        "api": {"insecure": True},
        "providers": {
            "providersThrottleDuration": "50ms",
            "etcd": {"endpoints": [kv_url.removeprefix("http://")], "rootKey": "traefik"},
        },
        "log": {"level": "ERROR"},
    }
    config = base / "traefik.yaml"
    config.write_text(json.dumps(static))  # JSON is YAML
    log = (base / "traefik.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "traefik"), f"--configFile={config}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{api}/api/version", timeout=1).ok)
        yield f"http://127.0.0.1:{web}", f"http://127.0.0.1:{api}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_for(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout}s: {check}")
        time.sleep(0.05)


def answer(web, method, path):
    response = requests.request(method, web + path, timeout=5)
    return response.text if response.status_code == 200 else response.status_code


def test_traefik_follows_the_table(traefik_url, kv):
    web, api = traefik_url
    backends = {name: Backend(name) for name in ("monolith", "users", "comparator")}
    try:
        lease = kv.lease(60)
        for name, backend in backends.items():
            key = f"traefik/http/services/{name}/loadbalancer/servers/{name}-1/url"
            kv.put(key, backend.url, lease=lease)
        table.initialise(kv, ENDPOINTS, healthchecks={"users": "/health"}, who="t@h")
        wait_for(lambda: answer(web, "GET", "/api/users/7") == "monolith")
        assert answer(web, "GET", "/not/in/the/table") == "monolith"  # catch-all

        # Every router and service Traefik built from our keys is healthy.
        routers = requests.get(api + "/api/http/routers", timeout=5).json()
        ours = {r["name"]: r for r in routers if r["provider"] == "etcd"}
        assert {r["status"] for r in ours.values()} == {"enabled"}, ours
        assert ours["get-api-users-id@etcd"]["middlewares"] == ["retry@etcd"]

        table.apply(kv, set_route(Route(USERS, "users")), who="t@h", what="flip")
        wait_for(lambda: answer(web, "GET", "/api/users/7") == "users")
        assert answer(web, "POST", "/api/users") == "monolith"
        assert answer(web, "GET", "/api/users") == "monolith"
        head = requests.head(web + "/api/users/7", timeout=5)
        assert backends["users"].hits[-1] == ("HEAD", "/api/users/7") and head.ok
        assert answer(web, "GET", "/api/users/7/more") == "monolith"

        canary = Route(LIST, weights={"users": 25, "monolith": 75})
        table.apply(kv, set_route(canary), who="t@h", what="canary")
        wait_for(lambda: answer(web, "GET", "/api/users") == "users", timeout=15)
        answers = [answer(web, "GET", "/api/users") for _ in range(200)]
        assert set(answers) == {"users", "monolith"}
        assert 30 <= answers.count("users") <= 70, answers.count("users")

        shadow = Route(LIST, mirror="comparator")
        table.apply(kv, set_route(shadow), who="t@h", what="shadow")
        seen = len(backends["comparator"].hits)
        wait_for(
            lambda: (
                answer(web, "GET", "/api/users?x=1") == "monolith"
                and len(backends["comparator"].hits) > seen
            )
        )
        assert ("GET", "/api/users?x=1") in backends["comparator"].hits

        for _ in range(3):  # shadow, canary, flip: back to where we started
            table.rollback(kv, who="t@h")
        wait_for(lambda: answer(web, "GET", "/api/users/7") == "monolith")
        answers = {answer(web, "GET", "/api/users") for _ in range(20)}
        assert answers == {"monolith"}
        lease.revoke()
    finally:
        for backend in backends.values():
            backend.shutdown()
            backend.server_close()
