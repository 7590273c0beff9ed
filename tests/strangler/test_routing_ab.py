"""A/B routes (flip --header/--cookie) and sticky canaries, through the CLI and a real Traefik."""

from __future__ import annotations

import json

import pytest
import requests
from click.testing import CliRunner
from routing_helpers import Backends, clean_routing, write_plan

from router.keys import ab_router, parse_endpoint, sticky_cookie
from strangler.cli import cli

pytestmark = pytest.mark.integration

USER = parse_endpoint("GET /api/users/<id>")


@pytest.fixture(scope="module")
def backends(etcd_server):
    """Healthy registered monolith and users."""
    group = Backends(etcd_server.client())
    group.start("monolith")
    group.start("users")
    yield group
    group.stop()


@pytest.fixture
def run(tmp_path, etcd_server, traefik_server, backends):
    """Run ``strangler ARGS`` against the module's etcd and Traefik, from a clean table."""
    clean_routing(etcd_server.client())
    plan = write_plan(tmp_path, "incremental")

    def invoke(*args):
        connection = ["--plan", str(plan), "--etcd", etcd_server.url, "--traefik-api", traefik_server.api_url]
        return CliRunner().invoke(cli, [*args, *connection])

    assert invoke("plan", "apply").exit_code == 0
    return invoke


def ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def who_answers(traefik_server, headers=None, cookies=None) -> str:
    answer = requests.get(f"{traefik_server.web_url}/api/users/7", headers=headers, cookies=cookies, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()["backend"]


def test_header_route_sends_only_matching_requests(run, traefik_server):
    out = ok(run("flip", "GET /api/users/<id>", "--to", "users", "--header", "X-Canary: 1"))
    assert "requests with X-Canary: 1 of GET /api/users/<id> to users" in out
    assert traefik_server.api.router(ab_router(USER.id))["service"] == "users"
    assert {who_answers(traefik_server, {"X-Canary": "1"}) for _ in range(10)} == {"users"}
    assert {who_answers(traefik_server) for _ in range(10)} == {"monolith"}
    assert who_answers(traefik_server, {"X-Canary": "2"}) == "monolith"
    row = {r["endpoint"]: r for r in json.loads(ok(run("routes", "--json")))}[str(USER)]
    assert row["match"] == {"backend": "users", "name": "X-Canary", "value": "1", "cookie": False}
    assert "X-Canary: 1 -> users" in row["serving"]
    ok(run("rollback"))
    traefik_server.api.wait_live(lambda routers, _s: f"{ab_router(USER.id)}@etcd" not in routers)
    assert who_answers(traefik_server, {"X-Canary": "1"}) == "monolith"


def test_cookie_route_matches_the_whole_pair(run, traefik_server):
    ok(run("flip", "GET /api/users/<id>", "--to", "users", "--cookie", "beta=yes"))
    assert who_answers(traefik_server, cookies={"beta": "yes", "other": "1"}) == "users"
    assert who_answers(traefik_server, cookies={"beta": "yesno"}) == "monolith"
    assert who_answers(traefik_server, cookies={"xbeta": "yes"}) == "monolith"
    assert who_answers(traefik_server) == "monolith"


def test_sticky_canary_keeps_one_user_on_one_side(run, traefik_server):
    ok(run("flip", "GET /api/users/<id>", "--to", "users", "--weight", "50", "--sticky"))
    first = requests.get(f"{traefik_server.web_url}/api/users/1", timeout=5)
    cookie = first.cookies.get(sticky_cookie(USER.id))
    assert cookie, first.headers
    side = first.json()["backend"]
    jar = {sticky_cookie(USER.id): cookie}
    assert {who_answers(traefik_server, cookies=jar) for _ in range(20)} == {side}
    # without the cookie both sides answer (a 50 % split over 40 requests)
    assert {who_answers(traefik_server) for _ in range(40)} == {"users", "monolith"}


def test_a_canary_is_not_sticky_unless_asked_for_an_exact_endpoint(run, traefik_server):
    ok(run("flip", "GET /api/users/<id>", "--to", "users", "--weight", "50"))
    answer = requests.get(f"{traefik_server.web_url}/api/users/1", timeout=5)
    assert sticky_cookie(USER.id) not in answer.cookies


@pytest.mark.parametrize("args", [
    ["--header", "X-Canary"],
    ["--header", "X-Canary: `x`"],
    ["--cookie", "novalue"],
    ["--header", "X-Canary: 1", "--cookie", "a=b"],
    ["--header", "X-Canary: 1", "--weight", "10"],
    ["--sticky"],
    ["--no-sticky"],
    ["--header", "X-Canary: 1", "--sticky"],
])
def test_bad_match_is_a_usage_error_and_writes_nothing(run, etcd_server, args):
    before = etcd_server.client().get_prefix("strangler/")[0]
    result = run("flip", "GET /api/users/<id>", "--to", "users", *args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert etcd_server.client().get_prefix("strangler/")[0] == before
