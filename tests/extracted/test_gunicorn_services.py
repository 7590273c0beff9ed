"""users and tokens under their real gunicorn commands: registry join/leave, and a login across them.

Both run as `strangler.toml` starts them (``gunicorn -c python:extracted.<name>.gunicorn_conf
--bind HOST:PORT extracted.<name>.wsgi:app``) with ``STRANGLER_ETCD`` set, against a real etcd.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from servers import child_env, start_server, stop_server

from router.registry import instances
from strangler.stack import procs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def start(name: str, tmp: Path, etcd_url: str, **env: str) -> tuple[subprocess.Popen, str]:
    """Start service *name* under gunicorn in its own process group; wait for /healthz."""
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    environ = child_env(tmp / "data", **{"STRANGLER_ETCD": etcd_url, "STRANGLER_BACKEND": f"t-{name}",
                                         "STRANGLER_ENV": "development", **env})
    cmd = [str(BIN / "gunicorn"), "-c", f"python:extracted.{name}.gunicorn_conf",
           "--bind", f"127.0.0.1:{port}", f"extracted.{name}.wsgi:app"]
    return start_server(cmd, environ, base, tmp / f"{name}.log", name=name), base


def stop(proc: subprocess.Popen) -> int | None:
    """SIGTERM the master (as `strangler down` does), KILL the group if it lingers; return its code."""
    return stop_server(proc, timeout=15, group=False)


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
