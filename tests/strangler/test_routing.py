"""strangler.routing and strangler.routing.apply: the pure rules, and the commands on a real etcd."""

from __future__ import annotations

import tomllib

import pytest
from routing_helpers import Backends, clean_routing, write_plan

from router import table
from router.keys import MONOLITH, Route, ShadowSpec, parse_endpoint
from router.traefik import TraefikAPI
from strangler import routing
from strangler.plan import Plan, PlanError, load_plan
from strangler.routing import apply as routing_plan
from strangler.stack import procs

USER = parse_endpoint("GET /api/users/<id>")
USERS = parse_endpoint("GET /api/users")
TOKENS = parse_endpoint("POST /api/tokens")
SEARCH = parse_endpoint("GET /api/search")
SOCKETIO = parse_endpoint("PREFIX /socket.io/")


@pytest.fixture
def plan_for(tmp_path):
    """Load the test plan for a strategy."""
    return lambda strategy: load_plan(write_plan(tmp_path, strategy))


@pytest.fixture(scope="module")
def backends(etcd_server):
    """Healthy registered monolith and users; tokens registered but dead; no search."""
    group = Backends(etcd_server.client())
    group.start("monolith")
    group.start("users")
    group.start("socketio")
    group.register_dead("tokens")
    yield group
    group.stop()


@pytest.fixture
def etcd(etcd_server, backends):
    client = etcd_server.client()
    clean_routing(client)
    return client


# -- pure ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, weight", [(None, None), ("1", 1), ("99", 99), (" 25% ", 25), (10, 10)])
def test_parse_weight_accepts_whole_percentages(text, weight):
    assert routing.parse_weight(text) == weight


@pytest.mark.parametrize("text", ["0", "100", "-5", "5.5", "ten", "", "+5"])
def test_parse_weight_refuses_the_rest(text):
    with pytest.raises(routing.RoutingError, match="1 to 99"):
        routing.parse_weight(text)


def test_resolve_by_spec_name_and_service(plan_for):
    plan = plan_for("incremental")
    assert routing.resolve(plan, ["get /api/users/<int:id>", "api.new_token"]) == [USER, TOKENS]
    assert routing.resolve(plan, service="users") == [USERS, parse_endpoint("POST /api/users"), USER]


def test_resolve_unknown_endpoint_names_close_matches(plan_for):
    with pytest.raises(PlanError, match='did you mean "GET /api/users/<id>"'):
        routing.resolve(plan_for("incremental"), ["GET /api/user/<id>"])


def test_resolve_refuses_both_or_neither(plan_for):
    plan = plan_for("incremental")
    with pytest.raises(routing.RoutingError):
        routing.resolve(plan, ["GET /api/users"], service="users")
    with pytest.raises(routing.RoutingError):
        routing.resolve(plan)


def test_check_flip_follows_owner_and_strategy(plan_for):
    incremental, new_only, big_bang = (plan_for(s) for s in ("incremental", "new-only", "big-bang"))
    routing.check_flip(incremental, [USER], "users")
    routing.check_flip(incremental, [USER], "monolith")
    with pytest.raises(routing.RoutingError, match="gives GET /api/users/<id> to users, not tokens"):
        routing.check_flip(incremental, [USER], "tokens")
    with pytest.raises(PlanError, match="unknown backend"):
        routing.check_flip(incremental, [USER], "userz")
    with pytest.raises(routing.RoutingError, match="new-only freezes"):
        routing.check_flip(new_only, [USERS], "users")
    with pytest.raises(routing.RoutingError, match="monolith has no GET /api/search"):
        routing.check_flip(new_only, [SEARCH], "monolith")
    routing.check_flip(new_only, [SOCKETIO], "socketio")  # prefixes are not frozen
    with pytest.raises(routing.RoutingError, match="cutover --all"):
        routing.check_flip(big_bang, [USER], "users")


def test_served_only_endpoints_start_on_their_service_and_never_flip_back(plan_for):
    plan = Plan.from_data(_with_serves(plan_for("incremental")))
    internal = parse_endpoint("POST /internal/users/authenticate")
    (route,) = [r for r in plan.routes() if r.endpoint == internal]
    assert route.initial == "users" and plan.owner(internal) == "users"
    routing.check_flip(plan, [internal], "users")
    with pytest.raises(routing.RoutingError):
        routing.check_flip(plan, [internal], "monolith")


def _with_serves(plan: Plan) -> dict:
    data = tomllib.loads(plan.path.read_text())
    data["backends"]["users"]["serves"] = ["POST /internal/users/authenticate"]
    return data


def test_flipped_full_and_canary_keep_the_mirror():
    shadowed = Route(USER, mirror="comparator", mirror_percent=30)
    assert routing.flipped(shadowed, "users", None) == Route(USER, "users", mirror="comparator", mirror_percent=30)
    canary = routing.flipped(shadowed, "users", 10)
    assert canary.weights == {"users": 10, MONOLITH: 90} and canary.backend == MONOLITH
    assert (canary.mirror, canary.mirror_percent) == ("comparator", 30)
    back = routing.flipped(Route(USER, "users"), MONOLITH, 5)
    assert back.weights == {MONOLITH: 5, "users": 95}
    with pytest.raises(routing.RoutingError, match="already"):
        routing.flipped(Route(USER, "users"), "users", 10)


def test_expectation_names_traefik_services():
    options = table.Options(monolith="flack")
    spec = routing.expectation(
        [Route(USER), Route(USERS, weights={"users": 10, MONOLITH: 90}), Route(TOKENS, mirror="cmp")],
        options,
    )
    assert spec == {
        USER.id: "flack",
        USERS.id: {"users": 10, "flack": 90},
        TOKENS.id: ShadowSpec(f"{TOKENS.id}-shadow", 100),
    }


def test_desired_routes_keep_allowed_flips_and_reset_the_rest(plan_for):
    plan = plan_for("incremental")
    stray = parse_endpoint("GET /gone")
    current = {
        USER: Route(USER, "users"),
        USERS: Route(USERS, weights={"users": 10, MONOLITH: 90}),
        TOKENS: Route(TOKENS, "users", mirror="cmp"),  # the plan gives tokens to tokens
        stray: Route(stray, "users"),
    }
    wanted = routing_plan.desired_routes(plan, current)
    assert wanted[USER] == current[USER] and wanted[USERS] == current[USERS]
    assert wanted[TOKENS] == Route(TOKENS, MONOLITH, mirror="cmp")
    assert stray not in wanted
    assert wanted[SOCKETIO] == Route(SOCKETIO)  # new: starts on the monolith
    assert set(wanted) == set(plan.endpoints())


def test_desired_routes_new_only_puts_new_endpoints_on_their_service(plan_for):
    plan = plan_for("new-only")
    wanted = routing_plan.desired_routes(plan, {USERS: Route(USERS, "users")})
    assert wanted[SEARCH] == Route(SEARCH, "search")
    assert wanted[USERS] == Route(USERS)  # frozen: back on the monolith


def test_route_rows_say_whether_the_plan_agrees(plan_for):
    plan = plan_for("incremental")
    stray = parse_endpoint("GET /gone")
    rows = {
        r["endpoint"]: r
        for r in routing_plan.route_rows(
            plan, {USER: Route(USER, "users"), TOKENS: Route(TOKENS, "users"), stray: Route(stray)}
        )
    }
    assert rows[str(USER)]["plan_agrees"] and rows[str(USER)]["backend"] == "users"
    assert rows[str(USER)]["name"] == "api.get_user" and rows[str(USER)]["state"] == "flipped"
    assert not rows[str(TOKENS)]["plan_agrees"]
    assert not rows["GET /gone"]["plan_agrees"] and rows["GET /gone"]["owner"] is None
    assert rows[str(USERS)]["state"] == "not applied" and not rows[str(USERS)]["plan_agrees"]


# -- against etcd --------------------------------------------------------------------------


def test_plan_apply_is_idempotent_and_dry_run_writes_nothing(etcd, plan_for):
    plan = plan_for("incremental")
    before = etcd.revision()
    dry = routing_plan.apply_plan(etcd, plan, dry_run=True)
    assert dry.change is None and etcd.revision() == before
    assert f"+ {USER}: monolith" in dry.lines
    first = routing_plan.apply_plan(etcd, plan)
    assert first.change is not None and first.lines == dry.lines
    routes, _ = table.load(etcd)
    assert routes == {ep: Route(ep) for ep in plan.endpoints()}
    assert table.load_options(etcd).healthchecks["users"] == "/healthz"
    again = routing_plan.apply_plan(etcd, plan)
    assert again.change is None and again.lines == []


def test_flip_writes_one_change_per_command(etcd, plan_for):
    plan = plan_for("incremental")
    routing_plan.apply_plan(etcd, plan)
    outcome = routing.flip(etcd, plan, routing.resolve(plan, service="users"), "users", who="t@h")
    routes, _ = table.load(etcd)
    assert all(routes[ep].backend == "users" for ep in plan.service_endpoints("users"))
    assert table.history(etcd)[-1] == outcome.change and outcome.change.who == "t@h"
    canary = routing.flip(etcd, plan, [USER], "monolith", weight=20)
    assert table.load(etcd)[0][USER].weights == {MONOLITH: 20, "users": 80}
    assert canary.change.id == outcome.change.id + 1


def _refused(etcd, call, match):
    before = etcd.revision()
    with pytest.raises(routing.RoutingError, match=match):
        call()
    assert etcd.revision() == before


def test_flip_to_a_backend_without_healthy_instance_writes_nothing(etcd, plan_for):
    plan = plan_for("incremental")
    routing_plan.apply_plan(etcd, plan)
    # tokens has a registered instance, but it does not answer its health check
    _refused(etcd, lambda: routing.flip(etcd, plan, [TOKENS], "tokens"), "no healthy instance of tokens")


def test_flip_before_plan_apply_is_refused(etcd, plan_for):
    plan = plan_for("incremental")
    _refused(etcd, lambda: routing.flip(etcd, plan, [USER], "users"), "run strangler plan apply")


def test_flip_refuses_when_traefik_cannot_confirm(etcd, plan_for):
    plan = plan_for("incremental")
    routing_plan.apply_plan(etcd, plan)
    nobody = TraefikAPI(f"http://127.0.0.1:{procs.free_port()}")
    _refused(etcd, lambda: routing.flip(etcd, plan, [USER], "users", api=nobody), "nothing was changed")


def test_cutover_all_is_one_change_and_one_rollback_undoes_it(etcd, plan_for):
    plan = plan_for("big-bang")
    routing_plan.apply_plan(etcd, plan)
    # tokens is dead: cut over a plan without it by registering a healthy one for this test
    group = Backends(etcd)
    group.start("tokens")
    try:
        outcome = routing.cutover_all(etcd, plan)
    finally:
        group.stop()
    routes, _ = table.load(etcd)
    assert {ep: r.backend for ep, r in routes.items()} == {
        r.endpoint: routing.route_backend(plan, r.owner) for r in plan.routes()
    }
    assert len(outcome.change.endpoints) == 5
    routing.rollback(etcd)
    assert table.load(etcd)[0] == {ep: Route(ep) for ep in plan.endpoints()}


def test_cutover_all_is_refused_outside_big_bang_and_without_healthy_services(etcd, plan_for):
    routing_plan.apply_plan(etcd, plan_for("big-bang"))
    _refused(etcd, lambda: routing.cutover_all(etcd, plan_for("incremental")), "for strategy big-bang")
    _refused(etcd, lambda: routing.cutover_all(etcd, plan_for("big-bang")), "tokens")
