"""users and tokens under their real gunicorn commands: registry join/leave, and a login across them.

Both run as `strangler.toml` starts them (``gunicorn -c python:extracted.<name>.gunicorn_conf
--bind HOST:PORT extracted.<name>.wsgi:app``) with ``STRANGLER_ETCD`` set, against a real etcd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from router.registry import instances
from strangler import procs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 40.0


def start(name: str, tmp: Path, etcd_url: str, **env: str) -> tuple[subprocess.Popen, str]:
    """Start service *name* under gunicorn in its own process group; wait for /healthz."""
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SOCKETIO_MESSAGE_QUEUE")}
    environ.update({"STRANGLER_ETCD": etcd_url, "STRANGLER_BACKEND": f"t-{name}",
                    "STRANGLER_DATA_DIR": str(tmp / "data"), "STRANGLER_ENV": "development", **env})
    cmd = [str(BIN / "gunicorn"), "-c", f"python:extracted.{name}.gunicorn_conf",
           "--bind", f"127.0.0.1:{port}", f"extracted.{name}.wsgi:app"]
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=environ, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop(proc)
    pytest.fail(f"{name} did not answer /healthz:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> int | None:
    """SIGTERM the master (as `strangler down` does), KILL the group if it lingers; return its code."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stray workers, if any survived
    except ProcessLookupError:
        pass
    return proc.returncode


@pytest.fixture(scope="module")
def services(tmp_path_factory, etcd_server) -> Iterator[dict]:
    """users (two workers) and tokens (reaching users as its load balancer), both running."""
    tmp = tmp_path_factory.mktemp("services")
    users, users_url = start("users", tmp, etcd_server.url, STRANGLER_WORKERS="2")
    try:
        tokens, tokens_url = start("tokens", tmp, etcd_server.url, STRANGLER_LB_URL=users_url)
    except BaseException:
        stop(users)
        raise
    yield {"users": (users, users_url), "tokens": (tokens, tokens_url), "tmp": tmp}
    stop(tokens)
    stop(users)


def registered(etcd_server, name: str) -> tuple[list, dict]:
    etcd = etcd_server.client()
    servers, _ = etcd.get_prefix(f"traefik/http/services/t-{name}/loadbalancer/servers/")
    return instances(etcd, f"t-{name}"), servers


@pytest.mark.parametrize("name", ["users", "tokens"])
def test_each_service_registers_exactly_once(services, etcd_server, name):
    _proc, url = services[name]
    found, servers = registered(etcd_server, name)
    assert [instance.url for instance in found] == [url]
    assert list(servers.values()) == [url]
    assert requests.get(f"{url}/healthz", timeout=5).json()["service"] == name


def test_users_database_was_migrated_by_the_master(services):
    assert (services["tmp"] / "data" / "users.sqlite").exists()
    assert not (services["tmp"] / "data" / "tokens.sqlite").exists()


def test_login_across_the_two_processes(services):
    users_url, tokens_url = services["users"][1], services["tokens"][1]
    created = requests.post(f"{users_url}/api/users", json={"nickname": "gun", "password": "pw"}, timeout=10)
    assert created.status_code == 201
    token = requests.post(f"{tokens_url}/api/tokens", auth=("gun", "pw"), timeout=10).json()["token"]
    assert requests.get(f"{users_url}/api/users", headers={"Authorization": f"Bearer {token}"},
                        timeout=10).status_code == 200
    wrong = requests.post(f"{tokens_url}/api/tokens", auth=("gun", "no"), timeout=10)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")


def test_sigterm_leaves_the_registry(tmp_path, etcd_server):
    proc, url = start("tokens", tmp_path, etcd_server.url, STRANGLER_BACKEND="t-leaving")
    assert [i.url for i in registered(etcd_server, "leaving")[0]] == [url]
    assert stop(proc) == 0
    assert registered(etcd_server, "leaving") == ([], {})
