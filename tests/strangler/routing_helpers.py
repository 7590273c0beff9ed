"""Shared by the routing tests: plans per strategy, tiny registered backends, keyspace cleaning."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from router.etcd import Etcd
from router.keys import is_server_key
from router.registry import Registration

INVENTORY = [
    ("GET /api/users", "api.get_users"),
    ("POST /api/users", "api.new_user"),
    ("GET /api/users/<id>", "api.get_user"),
    ("POST /api/tokens", "api.new_token"),
    ("GET /healthz", "health.healthz"),
]
# Who owns what, per strategy. new-only services may own only endpoints the monolith lacks.
SERVICES = {
    "incremental": {
        "users": ["GET /api/users", "POST /api/users", "GET /api/users/<id>"],
        "tokens": ["POST /api/tokens"],
        "socketio": ["PREFIX /socket.io/"],
    },
    "new-only": {
        "search": ["GET /api/search"],
        "users": [],
        "socketio": ["PREFIX /socket.io/"],
    },
}
SERVICES["big-bang"] = SERVICES["incremental"]


def plan_text(strategy: str) -> str:
    """A small valid plan for ``strategy`` (run_dir beside the file, free ports)."""
    lines = [
        "[strangler]",
        f'strategy = "{strategy}"',
        "[stack]",
        "web_port = 0\ndashboard_port = 0\netcd_port = 0\netcd_peer_port = 0\nredis_port = 0",
        "[backends.monolith]",
        'command = "run-monolith {port}"\nhealth = "/healthz"\napp = "monolith:create_app"',
    ]
    for name, endpoints in SERVICES[strategy].items():
        lines += [f"[backends.{name}]", f'command = "run-{name} {{port}}"', 'health = "/healthz"',
                  f"endpoints = {json.dumps(endpoints)}"]
    for spec, name in INVENTORY:
        lines += ["[[endpoints]]", f'endpoint = "{spec}"', f'name = "{name}"']
    return "\n".join(lines) + "\n"


def write_plan(directory: Path, strategy: str) -> Path:
    """Write ``plan_text(strategy)`` to ``directory/strangler.toml`` and return its path."""
    path = directory / "strangler.toml"
    path.write_text(plan_text(strategy))
    return path


class TinyBackend(ThreadingHTTPServer):
    """A tiny HTTP backend: every path answers ``{"backend": name}``; /healthz answers 200."""

    def __init__(self, name: str) -> None:
        self.name = name
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = json.dumps({"backend": backend.name}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_POST = do_PUT = do_DELETE = do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Backends:
    """Tiny backends registered in etcd (real registry entries); ``stop()`` ends them all."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self.servers: list[TinyBackend] = []
        self.registrations: list[Registration] = []

    def start(self, name: str) -> TinyBackend:
        """Serve and register one instance of backend ``name``."""
        server = TinyBackend(name)
        self.servers.append(server)
        self.registrations.append(Registration(self.etcd, name, server.url, ttl=5).start())
        return server

    def register_dead(self, name: str) -> Registration:
        """Register an instance of ``name`` whose URL nobody answers (fails its health check)."""
        dead = TinyBackend(name)
        dead.shutdown()
        dead.server_close()
        registration = Registration(self.etcd, name, dead.url, ttl=5).start()
        self.registrations.append(registration)
        return registration

    def stop(self) -> None:
        """Deregister and stop every backend started here."""
        for registration in self.registrations:
            registration.stop()
        for server in self.servers:
            server.shutdown()
            server.server_close()


def clean_routing(etcd: Etcd) -> None:
    """Delete the route table, its history and derived Traefik keys; keep registrations."""
    for prefix in ("strangler/routes/", "strangler/history/", "strangler/meta/"):
        etcd.delete_prefix(prefix)
    keys, _ = etcd.get_prefix("traefik/http/")
    for key in keys:
        if not is_server_key(key):
            etcd.delete(key)
