"""The routing commands through CliRunner, against a real etcd and a real Traefik."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from routing_helpers import Backends, clean_routing, write_plan

from router.keys import parse_endpoint
from strangler import procs
from strangler.cli import cli

pytestmark = pytest.mark.integration

USER = parse_endpoint("GET /api/users/<id>")


@pytest.fixture(scope="module")
def backends(etcd_server):
    """Healthy registered monolith and users; tokens registered but not answering."""
    group = Backends(etcd_server.client())
    group.start("monolith")
    group.start("users")
    group.register_dead("tokens")
    yield group
    group.stop()


@pytest.fixture
def etcd(etcd_server, backends):
    client = etcd_server.client()
    clean_routing(client)
    return client


@pytest.fixture
def run(tmp_path, etcd_server, traefik_server):
    """Run ``strangler ARGS`` with a plan of the given strategy and the test stack's URLs."""

    def invoke(*args, strategy="incremental", etcd_url=None):
        directory = tmp_path / strategy
        directory.mkdir(exist_ok=True)
        plan = write_plan(directory, strategy)
        connection = ["--plan", str(plan), "--etcd", etcd_url or etcd_server.url,
                      "--traefik-api", traefik_server.api_url]
        return CliRunner().invoke(cli, [*args, *connection])

    return invoke


def routes_json(run, strategy="incremental"):
    result = run("routes", "--json", strategy=strategy)
    assert result.exit_code == 0, result.output
    return {row["endpoint"]: row for row in json.loads(result.output)}


def ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def test_plan_apply_then_routes(etcd, run, traefik_server):
    dry = ok(run("plan", "apply", "--dry-run"))
    assert f"+ {USER}: monolith" in dry and "nothing written" in dry
    assert etcd.get_prefix("strangler/routes/")[0] == {}
    out = ok(run("plan", "apply"))
    assert "applied the plan (change 1" in out and "Traefik confirmed it live" in out
    rows = routes_json(run)
    assert rows[str(USER)]["state"] == "monolith" and rows[str(USER)]["owner"] == "users"
    assert all(row["plan_agrees"] for row in rows.values())
    assert traefik_server.api.router(USER.id)["service"] == "monolith"
    assert "already matches" in ok(run("plan", "apply"))
    assert "GET" in ok(run("routes"))  # the rich table renders


@pytest.mark.parametrize("named", ["GET /api/users/<id>", "api.get_user", "get /api/users/<int:id>"])
def test_flip_one_endpoint_by_spec_or_name(etcd, run, traefik_server, named):
    ok(run("plan", "apply"))
    out = ok(run("flip", named, "--to", "users"))
    assert "flip GET /api/users/<id> to users (change 2" in out and " ms after the write" in out
    assert routes_json(run)[str(USER)]["backend"] == "users"
    assert traefik_server.api.router(USER.id)["service"] == "users"


def test_flip_a_whole_service_in_one_change(etcd, run):
    ok(run("plan", "apply"))
    ok(run("flip", "--service", "users", "--to", "users"))
    rows = routes_json(run)
    assert {e for e, r in rows.items() if r["backend"] == "users"} == {
        "GET /api/users", "POST /api/users", "GET /api/users/<id>"}
    history = json.loads(ok(run("history", "--json")))
    assert len(history) == 2 and len(history[1]["after"]) == 3


def test_weight_puts_the_endpoint_on_a_canary(etcd, run, traefik_server):
    ok(run("plan", "apply"))
    ok(run("flip", "GET /api/users/<id>", "--to", "users", "--weight", "30"))
    row = routes_json(run)[str(USER)]
    assert row["state"] == "canary" and row["weights"] == {"users": 30, "monolith": 70}
    service = traefik_server.api.service(f"{USER.id}-canary")
    assert {c["name"]: c["weight"] for c in service["weighted"]["services"]} == {
        "monolith": 70, "users": 30}


# a bad --weight is a usage error (exit 2): tests/strangler/test_cli_numbers.py
REFUSALS = [
    (["flip", "GET /api/user/<id>", "--to", "users"], "incremental", 'did you mean "GET /api/users/<id>"'),
    (["flip", "api.get_usr", "--to", "users"], "incremental", "unknown endpoint"),
    (["flip", "GET /api/users/<id>", "--to", "userz"], "incremental", 'unknown backend "userz"'),
    (["flip", "GET /api/users/<id>", "--to", "tokens"], "incremental", "gives GET /api/users/<id> to users"),
    (["flip", "POST /api/tokens", "--to", "tokens"], "incremental", "no healthy instance of tokens"),
    (["flip", "GET /api/users", "--to", "users"], "new-only", "new-only freezes"),
    (["flip", "GET /api/users", "--to", "users"], "big-bang", "cutover --all"),
    (["cutover", "--all"], "incremental", "for strategy big-bang"),
    (["cutover"], "big-bang", "say --all"),
    (["rollback", "abc"], "incremental", "not a change id"),
    (["rollback", "99"], "incremental", "there is no change 99"),
]


@pytest.mark.parametrize("args, strategy, message", REFUSALS)
def test_refusals_are_one_line_and_write_nothing(etcd, run, args, strategy, message):
    ok(run("plan", "apply", strategy=strategy))
    before = etcd.revision()
    result = run(*args, strategy=strategy)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert etcd.revision() == before


@pytest.mark.parametrize("args", [["routes"], ["history"], ["flip", "api.get_user", "--to", "users"],
                                  ["rollback"], ["plan", "apply"]])
def test_etcd_down_is_one_line(etcd, run, args):
    down = f"http://127.0.0.1:{procs.free_port()}"
    result = run(*args, etcd_url=down)
    assert result.exit_code == 1 and "is not answering" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert etcd.get_prefix("strangler/routes/")[0] == {}  # nothing went anywhere else either


def test_history_and_rollback(etcd, run, traefik_server):
    ok(run("plan", "apply"))
    ok(run("flip", "api.get_user", "--to", "users"))
    out = ok(run("rollback"))
    assert "roll back change 2" in out and "Traefik confirmed" in out
    assert traefik_server.api.router(USER.id)["service"] == "monolith"
    history = json.loads(ok(run("history", "--json")))
    assert [h["id"] for h in history] == [1, 2, 3]
    assert history[2]["rollback_of"] == 2 and not history[1]["in_effect"]
    assert all("@" in h["who"] and h["revision"] > 0 for h in history)
    assert history[0]["revision"] < history[1]["revision"] < history[2]["revision"]
    table_text = ok(run("history"))
    assert "flip GET /api/users/<id> to users" in table_text


def test_rollback_of_a_given_change_and_nothing_left(etcd, run):
    ok(run("plan", "apply"))
    ok(run("flip", "api.get_user", "--to", "users"))
    ok(run("flip", "api.get_users", "--to", "users"))
    ok(run("rollback", "2"))  # the older flip; the newer one stays
    rows = routes_json(run)
    assert rows[str(USER)]["backend"] == "monolith" and rows["GET /api/users"]["backend"] == "users"


def test_connection_comes_from_the_stack_state_file(etcd, tmp_path, etcd_server, traefik_server):
    plan = write_plan(tmp_path, "incremental")
    state = tmp_path / ".strangler" / "state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"etcd": etcd_server.url, "traefik_api": traefik_server.api_url}))
    result = CliRunner().invoke(cli, ["plan", "apply", "--plan", str(plan)], env={
        "STRANGLER_ETCD": None, "STRANGLER_TRAEFIK_API": None})
    assert result.exit_code == 0, result.output
    assert "Traefik confirmed" in result.output
