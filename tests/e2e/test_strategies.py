"""End to end, per strategy: the routing commands move real traffic through a real Traefik.

One etcd and one Traefik for the module; tiny registered backends answer
``{"backend": <name>}`` so every response says who served it.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

# The plan and backend helpers are shared with tests/strangler (not a package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strangler"))
from routing_helpers import Backends, clean_routing, write_plan  # noqa: E402

from router.etcd import Etcd  # noqa: E402
from router.traefik import seed_root_key, static_config, write_static_config  # noqa: E402
from strangler.cli import cli  # noqa: E402
from strangler.stack import procs  # noqa: E402

pytestmark = pytest.mark.integration

SERVICES = ["monolith", "users", "tokens", "socketio", "search"]


@pytest.fixture(scope="module")
def backends(etcd_server):
    group = Backends(etcd_server.client())
    for name in SERVICES:
        group.start(name)
    yield group
    group.stop()


@pytest.fixture
def stack(tmp_path, etcd_server, traefik_server, backends):
    """Run strangler commands against the module's stack; ``web`` is Traefik's public URL."""
    clean_routing(etcd_server.client())

    class Stack:
        web = traefik_server.web_url
        etcd = etcd_server.client()

        @staticmethod
        def run(*args, strategy, ok=True):
            plan = write_plan(tmp_path, strategy)
            result = CliRunner().invoke(cli, [*args, "--plan", str(plan), "--etcd", etcd_server.url,
                                              "--traefik-api", traefik_server.api_url])
            if ok:
                assert result.exit_code == 0, result.output
            return result

    return Stack


def served_by(web: str, method: str, path: str) -> str:
    response = requests.request(method, web + path, timeout=5)
    assert response.status_code == 200, (method, path, response.status_code)
    return response.json()["backend"]


def spread(web: str, method: str, path: str, n: int = 20) -> Counter:
    return Counter(served_by(web, method, path) for _ in range(n))


def history(stack, strategy):
    return json.loads(stack.run("history", "--json", strategy=strategy).stdout)


def routes(stack, strategy):
    rows = json.loads(stack.run("routes", "--json", strategy=strategy).stdout)
    return {row["endpoint"]: row for row in rows}


def test_incremental_flip_weight_prefix_and_rollback(stack):
    run = lambda *a, **k: stack.run(*a, strategy="incremental", **k)  # noqa: E731
    run("plan", "apply")
    assert served_by(stack.web, "GET", "/api/users/7") == "monolith"

    out = run("flip", "api.get_user", "--to", "users").output
    assert "Traefik confirmed it live" in out
    assert served_by(stack.web, "GET", "/api/users/7") == "users"
    assert served_by(stack.web, "GET", "/api/users") == "monolith"
    assert served_by(stack.web, "POST", "/api/tokens") == "monolith"

    run("flip", "GET /api/users", "--to", "users", "--weight", "50")
    assert set(spread(stack.web, "GET", "/api/users")) == {"monolith", "users"}
    assert routes(stack, "incremental")["GET /api/users"]["state"] == "canary"

    run("flip", "PREFIX /socket.io/", "--to", "socketio")
    assert served_by(stack.web, "GET", "/socket.io/?EIO=4&transport=polling") == "socketio"
    assert served_by(stack.web, "POST", "/socket.io/x") == "socketio"
    assert served_by(stack.web, "GET", "/anything/else") == "monolith"  # the catch-all

    run("rollback")  # the prefix flip
    run("rollback")  # the canary
    assert spread(stack.web, "GET", "/api/users", 10) == Counter(monolith=10)
    assert served_by(stack.web, "GET", "/api/users/7") == "users"
    run("rollback")  # the first flip
    assert served_by(stack.web, "GET", "/api/users/7") == "monolith"
    whats = [h["what"] for h in history(stack, "incremental")]
    assert len(whats) == 7 and whats[1] == "flip GET /api/users/<id> to users"
    assert whats[-1].startswith("roll back change 2")


def test_big_bang_cutover_is_one_change_and_one_rollback(stack):
    run = lambda *a, **k: stack.run(*a, strategy="big-bang", **k)  # noqa: E731
    run("plan", "apply")
    before = len(history(stack, "big-bang"))
    out = run("cutover", "--all").output
    assert "cutover --all: 5 endpoints" in out and "Traefik confirmed" in out
    assert len(history(stack, "big-bang")) == before + 1
    expected = {("GET", "/api/users"): "users", ("POST", "/api/users"): "users",
                ("GET", "/api/users/3"): "users", ("POST", "/api/tokens"): "tokens",
                ("GET", "/socket.io/"): "socketio", ("GET", "/healthz"): "monolith"}
    assert {k: served_by(stack.web, *k) for k in expected} == expected
    refused = run("flip", "api.get_user", "--to", "monolith", ok=False)
    assert refused.exit_code == 1 and "use strangler cutover --all" in refused.output

    run("rollback")
    assert {served_by(stack.web, *k) for k in expected} == {"monolith"}
    assert {r["state"] for r in routes(stack, "big-bang").values()} == {"monolith"}


def test_new_only_freezes_the_monolith_and_serves_new_endpoints_from_services(stack):
    run = lambda *a, **k: stack.run(*a, strategy="new-only", **k)  # noqa: E731
    run("plan", "apply")
    assert served_by(stack.web, "GET", "/api/search") == "search"
    assert served_by(stack.web, "GET", "/api/users") == "monolith"
    revision = stack.etcd.revision()
    refused = run("flip", "GET /api/users", "--to", "users", ok=False)
    assert refused.exit_code == 1 and "new-only freezes the monolith's endpoints" in refused.output
    assert stack.etcd.revision() == revision
    assert served_by(stack.web, "GET", "/api/users") == "monolith"
    assert routes(stack, "new-only")["GET /api/search"]["backend"] == "search"


def test_etcd_down_traefik_keeps_serving_the_last_configuration(tmp_path):
    """Own etcd and Traefik: this test stops its etcd."""
    etcd_proc = procs.start_etcd(tmp_path / "etcd", procs.free_port(), procs.free_port(),
                                 unsafe_no_fsync=True)
    group = traefik = None
    try:
        etcd = Etcd.connect(etcd_proc.url)
        web, api = procs.free_port(), procs.free_port()
        config = write_static_config(tmp_path / "traefik.yml", static_config(
            web_port=web, api_port=api, etcd_endpoints=[etcd_proc.url], internal_port=procs.free_port()))
        seed_root_key(etcd)
        traefik = procs.start_traefik(config)
        group = Backends(etcd)
        group.start("monolith")
        group.start("users")
        plan = write_plan(tmp_path, "incremental")
        conn = ["--plan", str(plan), "--etcd", etcd_proc.url, "--traefik-api", traefik.url]
        runner = CliRunner()
        for args in (["plan", "apply"], ["flip", "api.get_user", "--to", "users"]):
            assert runner.invoke(cli, [*args, *conn]).exit_code == 0
        site = f"http://127.0.0.1:{web}"

        etcd_proc.stop()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # still answering as before, for a while
            assert served_by(site, "GET", "/api/users/1") == "users"
            assert served_by(site, "GET", "/api/users") == "monolith"
            time.sleep(0.2)
        result = runner.invoke(cli, ["flip", "api.get_users", "--to", "users", *conn])
        assert result.exit_code == 1 and f"etcd not answering at {etcd_proc.url}" in result.output
        assert "traffic keeps flowing on the last routing" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert served_by(site, "GET", "/api/users") == "monolith"
    finally:
        if group is not None:
            group.stop()
        if traefik is not None:
            traefik.stop()
        etcd_proc.stop()
