"""The routing commands through CliRunner, against a real etcd and a real Traefik."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner
from routing_helpers import Backends, clean_routing, plan_text, write_plan

from router.keys import parse_endpoint
from strangler.cli import cli
from strangler.plan import load_plan
from strangler.stack.lifecycle import Stack, procs
from strangler.stack.parts import write_routes

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

    def invoke(*args, strategy="incremental", etcd_url=None, user=None, edit=None):
        """``user``: run as that USER; ``edit``: a function rewriting the plan's text first."""
        directory = tmp_path / strategy
        directory.mkdir(exist_ok=True)
        plan = write_plan(directory, strategy)
        if edit is not None:
            plan.write_text(edit(plan.read_text()))
        connection = ["--plan", str(plan), "--etcd", etcd_url or etcd_server.url,
                      "--traefik-api", traefik_server.api_url]
        # getpass reads LOGNAME before USER: drop it so USER decides, as for an operator's shell
        env = {"USER": user, "LOGNAME": None} if user else None
        return CliRunner().invoke(cli, [*args, *connection], env=env)

    return invoke


def routes_json(run, strategy="incremental"):
    result = run("routes", "--json", strategy=strategy)
    assert result.exit_code == 0, result.output
    return {row["endpoint"]: row for row in json.loads(result.stdout)}


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
    assert result.exit_code == 1 and "not answering" in result.output and down in result.output
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


# -- operators sharing the table: each undoes their own ----------------------------------------

HOST = socket.gethostname()
LIST = parse_endpoint("GET /api/users")


def refused(result):
    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    return line


def test_each_operator_rolls_back_their_own_change(etcd, run, traefik_server):
    ok(run("plan", "apply", user="alice"))
    ok(run("flip", "api.get_user", "--to", "users", user="alice"))  # change 2
    ok(run("flip", "api.get_users", "--to", "users", user="bob"))  # change 3
    out = ok(run("rollback", user="alice"))
    assert "roll back change 2 (flip GET /api/users/<id> to users)" in out
    assert f"change 2 was yours (alice@{HOST})" in out
    assert traefik_server.api.router(USER.id)["service"] == "monolith"
    assert traefik_server.api.router(LIST.id)["service"] == "users"  # bob's flip stays
    out = ok(run("rollback", user="bob"))
    assert "roll back change 3" in out and f"yours (bob@{HOST})" in out
    assert traefik_server.api.router(LIST.id)["service"] == "monolith"
    history = json.loads(ok(run("history", "--json")))
    assert [(h["who"], h["rollback_of"]) for h in history[3:]] == [
        (f"alice@{HOST}", 2), (f"bob@{HOST}", 3)]


def test_no_change_of_ones_own_says_what_to_type(etcd, run):
    ok(run("plan", "apply", user="alice"))
    ok(run("flip", "api.get_users", "--to", "users", user="bob"))
    before = etcd.revision()
    line = refused(run("rollback", user="carol"))
    assert line.startswith(f"Error: carol@{HOST} has no routing change in effect")
    assert f"change 2 by bob@{HOST} (flip GET /api/users to users)" in line
    assert "`strangler rollback 2`" in line and "--any" in line
    assert etcd.revision() == before


def test_someone_elses_change_by_id_names_its_owner(etcd, run, traefik_server):
    ok(run("plan", "apply", user="alice"))
    ok(run("flip", "api.get_users", "--to", "users", user="bob"))
    out = ok(run("rollback", "2", user="alice"))
    assert f"change 2 was bob@{HOST}'s, not yours (alice@{HOST})" in out
    assert traefik_server.api.router(LIST.id)["service"] == "monolith"
    assert json.loads(ok(run("history", "--json")))[-1]["who"] == f"alice@{HOST}"


def test_any_undoes_the_latest_change_whoever_made_it(etcd, run):
    ok(run("plan", "apply", user="alice"))
    ok(run("flip", "api.get_user", "--to", "users", user="alice"))
    ok(run("flip", "api.get_users", "--to", "users", user="bob"))
    out = ok(run("rollback", "--any", user="alice"))
    assert "roll back change 3" in out and f"change 3 was bob@{HOST}'s" in out
    rows = routes_json(run)
    assert rows[str(USER)]["backend"] == "users" and rows[str(LIST)]["backend"] == "monolith"
    usage = run("rollback", "2", "--any", user="alice")
    assert usage.exit_code == 2 and "not both" in usage.output


def test_a_later_change_by_someone_else_blocks_the_undo_and_names_them(etcd, run):
    ok(run("plan", "apply", user="alice"))
    ok(run("flip", "api.get_user", "--to", "users", user="alice"))
    ok(run("flip", "api.get_user", "--to", "monolith", "--weight", "20", user="bob"))
    before = etcd.revision()
    line = refused(run("rollback", user="alice"))
    assert f"change 3 (flip 20% of GET /api/users/<id> to monolith) by bob@{HOST}" in line
    assert "--force" in line and etcd.revision() == before


def give_up_user(text):
    """The plan with GET /api/users/<id> taken from users (so the monolith owns it)."""
    return text.replace('"POST /api/users", "GET /api/users/<id>"]', '"POST /api/users"]')


def add_search(text):
    """The plan with a new backend, search, and its new endpoint GET /api/search."""
    return text + (
        '[backends.search]\ncommand = "run-search {port}"\nhealth = "/healthz"\n'
        'serves = ["GET /api/search"]\n'
    )


def test_plan_apply_lists_live_moves_and_moves_nothing_without_yes(etcd, run, traefik_server):
    ok(run("plan", "apply"))
    ok(run("flip", "api.get_user", "--to", "users"))
    before = etcd.revision()
    result = run("plan", "apply", edit=give_up_user)
    assert result.exit_code == 1
    assert "live routes it would move:\n  GET /api/users/<id>: users -> monolith\n" in result.output
    assert "re-run with --yes" in result.output.strip().splitlines()[-1]
    dry = ok(run("plan", "apply", "--dry-run", edit=give_up_user))
    assert "~ GET /api/users/<id>: users -> monolith" in dry and "(only with --yes)" in dry
    assert etcd.revision() == before
    assert traefik_server.api.router(USER.id)["service"] == "users"

    out = ok(run("plan", "apply", "--yes", edit=give_up_user))
    assert "live routes moved:\n  GET /api/users/<id>: users -> monolith" in out
    assert traefik_server.api.router(USER.id)["service"] == "monolith"


def test_plan_apply_removing_a_flipped_endpoint_is_a_live_move(etcd, run):
    ok(run("plan", "apply"))
    ok(run("flip", "api.get_user", "--to", "users"))
    drop = lambda text: give_up_user(text).replace(  # noqa: E731
        '[[endpoints]]\nendpoint = "GET /api/users/<id>"\nname = "api.get_user"\n', "")
    before = etcd.revision()
    result = run("plan", "apply", edit=drop)
    assert result.exit_code == 1 and "GET /api/users/<id>: users -> monolith (the catch-all" in result.output
    assert etcd.revision() == before


def test_plan_apply_adding_endpoints_and_health_checks_needs_no_yes(etcd, run, traefik_server):
    ok(run("plan", "apply"))
    ok(run("flip", "api.get_user", "--to", "users"))
    out = ok(run("plan", "apply", edit=add_search))
    assert "+ GET /api/search: search" in out and "search /healthz" in out
    assert "live routes" not in out
    assert traefik_server.api.router(USER.id)["service"] == "users"


def test_plan_apply_keep_live_applies_the_rest(etcd, run, traefik_server):
    ok(run("plan", "apply"))
    ok(run("flip", "api.get_user", "--to", "users"))
    both = lambda text: add_search(give_up_user(text))  # noqa: E731
    out = ok(run("plan", "apply", "--keep-live", edit=both))
    assert "+ GET /api/search: search" in out and "~ GET /api/users/<id>" not in out
    assert "live routes kept where they are" in out and "GET /api/users/<id>: users -> monolith" in out
    assert traefik_server.api.router(USER.id)["service"] == "users"
    assert run("plan", "apply", "--yes", "--keep-live").exit_code == 2


def test_up_writes_the_plan_but_keeps_live_routes_it_would_move(etcd, run, tmp_path):
    # strangler up's route step (parts.write_routes) on a table a previous stack left flipped
    ok(run("plan", "apply"))
    ok(run("flip", "api.get_user", "--to", "users"))
    path = tmp_path / "up.toml"
    path.write_text(add_search(give_up_user(plan_text("incremental"))))
    lines = []
    stack = Stack(load_plan(path), tmp_path / "run", echo=lines.append)
    write_routes(stack, etcd, lines.append)
    rows = routes_json(run)
    assert rows[str(USER)]["backend"] == "users" and "GET /api/search" in rows
    assert lines == ["kept 1 live route(s) the plan would move (strangler plan apply --yes moves "
                     "them): GET /api/users/<id>: users -> monolith"]


def test_rollback_refuses_an_undo_the_plan_no_longer_allows(etcd, run, traefik_server):
    ok(run("plan", "apply", user="alice"))
    ok(run("flip", "api.get_user", "--to", "users", user="alice"))
    ok(run("plan", "apply", "--yes", edit=give_up_user, user="alice"))  # change 3: back on the monolith
    before = etcd.revision()
    line = refused(run("rollback", user="alice", edit=give_up_user))
    assert "undoing change 3 would send GET /api/users/<id> to users, which the plan no longer allows" in line
    assert "--force" in line and etcd.revision() == before
    line = refused(run("rollback", "2", user="alice", edit=give_up_user))  # the flip itself
    assert "change 3 (plan apply" in line
    out = ok(run("rollback", "--force", user="alice", edit=give_up_user))
    assert "roll back change 3" in out
    assert traefik_server.api.router(USER.id)["service"] == "users"
