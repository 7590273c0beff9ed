"""etcd with authentication, for real: docker/etcd-auth.sh turns it on, and our clients log in.

A real etcd is started, docker/etcd-auth.sh (what docker-compose.yml's
``etcd-init`` runs) makes the root, strangler and traefik users and enables
auth. Then: the client works with the strangler user's credentials, given or
taken from STRANGLER_ETCD_USER / STRANGLER_ETCD_PASSWORD, and survives its
token going stale (an etcd restart); without credentials, or with wrong
ones, it is refused with a one-line error; Traefik, configured through its
environment as compose configures it, reads routes as the read-only traefik
user; the CLI takes the credentials from its environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import servers
from click.testing import CliRunner

from router import table
from router.etcd import Etcd, EtcdAuthError
from router.keys import Route, parse_endpoint
from router.traefik import TraefikAPI, static_config, static_env
from strangler.cli import cli
from strangler.stack import procs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORDS = {"ETCD_ROOT_PASSWORD": "root-pw-for-tests", "ETCD_STRANGLER_PASSWORD": "strangler-pw-for-tests",
             "ETCD_TRAEFIK_PASSWORD": "traefik-pw-for-tests"}
STRANGLER = ("strangler", PASSWORDS["ETCD_STRANGLER_PASSWORD"])


class AuthEtcd:
    """A real etcd with auth on; ``restart()`` keeps its data and ports (tokens do not survive)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.ports = data_dir, (procs.free_port(), procs.free_port())
        self.proc = procs.start_etcd(data_dir, *self.ports, unsafe_no_fsync=True)
        self.url = self.proc.url

    def restart(self) -> None:
        self.proc.stop()
        self.proc = procs.start_etcd(self.data_dir, *self.ports, unsafe_no_fsync=True)


def run_auth_script(url: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "ETCDCTL_ENDPOINTS": url, **PASSWORDS}
    return subprocess.run(["sh", str(REPO / "docker/etcd-auth.sh")], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthEtcd]:
    server = AuthEtcd(tmp_path_factory.mktemp("etcd-auth"))
    try:
        first = run_auth_script(server.url)
        assert first.returncode == 0, first.stderr
        again = run_auth_script(server.url)  # idempotent: a second `compose up` runs it again
        assert again.returncode == 0 and "already on" in again.stdout, again.stderr
        yield server
    finally:
        server.proc.stop()


@pytest.fixture(autouse=True)
def no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRANGLER_ETCD_USER", raising=False)
    monkeypatch.delenv("STRANGLER_ETCD_PASSWORD", raising=False)


def test_the_toolkit_user_reads_and_writes_its_keys(etcd: AuthEtcd) -> None:
    client = Etcd.connect(etcd.url, wait=5, user=STRANGLER[0], password=STRANGLER[1])
    client.put("strangler/meta/probe", "1")
    lease = client.lease(10)
    client.put("traefik/http/services/x/loadbalancer/servers/i-1/url", "http://127.0.0.1:1", lease=lease)
    assert client.txn([], {"strangler/meta/txn-probe": "r"})
    assert client.get("strangler/meta/probe") == "1"
    assert client.get_prefix("traefik/http/services/x/")[0]
    assert lease.refresh() > 0
    lease.revoke()


def test_without_credentials_or_with_wrong_ones_etcd_refuses(etcd: AuthEtcd) -> None:
    with pytest.raises(EtcdAuthError, match="requires authentication: set STRANGLER_ETCD_USER"):
        Etcd(etcd.url).get("strangler/meta/probe")
    with pytest.raises(EtcdAuthError, match="requires authentication"):
        Etcd(etcd.url).put("traefik/x", "y")
    with pytest.raises(EtcdAuthError, match="refused user 'strangler': wrong user or password"):
        Etcd.connect(etcd.url, user="strangler", password="wrong")
    reader = Etcd(etcd.url, user="traefik", password=PASSWORDS["ETCD_TRAEFIK_PASSWORD"])
    assert reader.get("traefik/nothing-here") is None  # Traefik may read its keys ...
    with pytest.raises(EtcdAuthError, match="refused user 'traefik' that permission"):
        reader.put("traefik/http/routers/evil/rule", "PathPrefix(`/`)")  # ... and write none
    with pytest.raises(EtcdAuthError, match="permission"):
        Etcd(etcd.url, user=STRANGLER[0], password=STRANGLER[1]).put("elsewhere/x", "y")


def test_credentials_come_from_the_environment(etcd: AuthEtcd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRANGLER_ETCD_USER", STRANGLER[0])
    monkeypatch.setenv("STRANGLER_ETCD_PASSWORD", STRANGLER[1])
    client = Etcd.connect(etcd.url, wait=5)
    client.put("strangler/meta/from-env", "yes")
    assert client.get("strangler/meta/from-env") == "yes"
    with pytest.raises(ValueError, match="not in the URL"):
        Etcd(etcd.url.replace("http://", "http://strangler:pw@"))


def test_a_stale_token_is_renewed(etcd: AuthEtcd) -> None:
    client = Etcd(etcd.url, user=STRANGLER[0], password=STRANGLER[1])
    client.put("strangler/meta/before-restart", "1")
    etcd.restart()  # simple tokens live in etcd's memory: the client's is gone now
    assert client.get("strangler/meta/before-restart") == "1"


def test_traefik_reads_routes_as_the_read_only_user(etcd: AuthEtcd, tmp_path: Path) -> None:
    """Traefik configured by environment only (as docker-compose.yml does) with the traefik user."""
    writer = Etcd(etcd.url, user=STRANGLER[0], password=STRANGLER[1])
    writer.put("traefik", "")
    web, api = procs.free_port(), procs.free_port()
    cfg = static_config(web_port=web, api_port=api, etcd_endpoints=[etcd.url],
                        etcd_username="traefik", etcd_password=PASSWORDS["ETCD_TRAEFIK_PASSWORD"])
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **static_env(cfg)}
    assert env["TRAEFIK_PROVIDERS_ETCD_PASSWORD"] == PASSWORDS["ETCD_TRAEFIK_PASSWORD"]

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"users"]

    traefik = procs.Proc("traefik", [str(BIN / "traefik")], tmp_path / "traefik.log", env=env, cwd=str(tmp_path),
                         url=f"http://127.0.0.1:{api}").start()
    try:
        procs.wait_until(lambda: procs.http_ok(f"{traefik.url}/api/overview"), 30, "traefik", proc=traefik)
        with servers.serving(app) as users:
            lease = writer.lease(30)
            writer.put("traefik/http/services/users/loadbalancer/servers/u-1/url", users, lease=lease)
            table.apply(writer, [Route(parse_endpoint("GET /api/users"), "users")], who="t@h", what="route")
            TraefikAPI(traefik.url).wait_live({"get-api-users": "users"}, timeout=15)
            assert requests.get(f"http://127.0.0.1:{web}/api/users", timeout=5).text == "users"
            lease.revoke()
    finally:
        traefik.stop()
    assert PASSWORDS["ETCD_TRAEFIK_PASSWORD"] not in (tmp_path / "traefik.log").read_text()


def test_the_cli_takes_credentials_from_its_environment(etcd: AuthEtcd, tmp_path: Path) -> None:
    args = ["history", "--json", "--etcd", etcd.url, "--plan", str(REPO / "strangler.toml")]
    creds = {"STRANGLER_ETCD_USER": STRANGLER[0], "STRANGLER_ETCD_PASSWORD": STRANGLER[1]}
    granted = CliRunner().invoke(cli, args, env=creds)
    assert granted.exit_code == 0, granted.output
    assert [change["what"] for change in json.loads(granted.stdout)] == ["route"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code != 0 and "requires authentication" in refused.output
    assert "Traceback" not in refused.output and len(refused.output.strip().splitlines()) == 1
