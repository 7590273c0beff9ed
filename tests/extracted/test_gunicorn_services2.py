"""messages, socketio and ui under their real gunicorn commands (the ones in strangler.toml).

Each starts on a free port with ``STRANGLER_ETCD`` set and two workers, serves,
registers exactly once (the master, not each worker) and leaves the registry
when stopped.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
import socketio as socketio_client

from router.registry import instances
from strangler.stack import procs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def gunicorn_proc(service: str, port: int, env: dict[str, str], log_path: Path) -> procs.Proc:
    """The service's production command, as the plan writes it, not yet started."""
    argv = [str(BIN / "gunicorn"), "-c", f"python:extracted.{service}.gunicorn_conf",
            "--bind", f"127.0.0.1:{port}", f"extracted.{service}.wsgi:app"]
    return procs.Proc(name=service, argv=argv, log_path=log_path, env=env)


def check_messages(url: str) -> None:
    # the master migrated the service's own database before the workers forked
    answer = requests.get(f"{url}/api/messages", timeout=10)
    assert answer.status_code == 200 and answer.json() == {"messages": []}
    refused = requests.post(f"{url}/api/messages", json={"source": "x"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]


def check_socketio(url: str) -> None:
    client = socketio_client.Client(reconnection=False)
    client.connect(url, transports=["websocket"], wait_timeout=10)
    try:
        assert client.call("ping_user", "bad", timeout=10)["error"].startswith("invalid token")
    finally:
        client.disconnect()


def check_ui(url: str) -> None:
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert requests.get(f"{url}/static/app.js", timeout=10).status_code == 200


def children(pid: int) -> list[str]:
    """The process ids whose parent is *pid* (a gunicorn master's workers)."""
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


CHECKS = {"messages": check_messages, "socketio": check_socketio, "ui": check_ui}


@pytest.mark.parametrize("service", sorted(CHECKS))
def test_service_serves_under_gunicorn_and_registers_once(service, etcd_server, tmp_path):
    backend = f"{service}-{uuid.uuid4().hex[:6]}"  # etcd is shared by the module's tests
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"STRANGLER_ENV": "production", "STRANGLER_DATA_DIR": str(tmp_path / "data"),
           "SECRET_KEY": uuid.uuid4().hex, "JWT_SECRET_KEY": uuid.uuid4().hex,
           "STRANGLER_ETCD": etcd_server.url, "STRANGLER_BACKEND": backend,
           "STRANGLER_WORKERS": "2", "STRANGLER_LB_URL": f"http://127.0.0.1:{procs.free_port()}"}
    proc = gunicorn_proc(service, port, env, tmp_path / f"{service}.log").start()
    etcd = etcd_server.client()
    try:
        procs.wait_until(lambda: procs.http_ok(f"{url}/healthz"), 40, service, proc=proc)
        health = requests.get(f"{url}/healthz", timeout=10).json()
        assert health["status"] == "ok" and health["service"] == service
        procs.wait_until(lambda: instances(etcd, backend), 10, f"{service} registration", proc=proc)
        CHECKS[service](url)
        # healthz answers once one worker is up; the master may fork the second a moment later
        procs.wait_until(lambda: len(children(proc.pid)) == 2, 20, f"{service}'s second worker",
                         proc=proc)
        (instance,) = instances(etcd, backend)
        assert instance.url == url and instance.pid == proc.pid
        assert instance.health_path == "/healthz"
    finally:
        proc.stop(timeout=15)
    assert instances(etcd, backend) == []  # revoked on exit, not left to expire
