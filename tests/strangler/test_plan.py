"""load_plan and the Plan lookups the routing, stack and compare parts use."""

from pathlib import Path

import pytest

from strangler.plan import Endpoint, Plan, PlanError, Route, load_plan

PLAN = """
[strangler]
strategy = "incremental"

[stack]
web_port = 18000

[backends.monolith]
command = "gunicorn -b {host}:{port} mono:app"
health = "/healthz"
database = "sqlite:///{run_dir}/data/{name}.sqlite"
app = "mono:create_app"

[backends.users]
command = "gunicorn users:app"
health = "/healthz"
instances = 2
tables = ["users"]
endpoints = ["GET /api/users", "GET /api/users/<id>", "GET /api/avatars"]

[backends.socketio]
command = "sio"
health = "/healthz"
endpoints = ["PREFIX /socket.io/"]

[compare]
ignore = ["request_id"]

[compare."GET /api/users"]
ignore = ["users[*].last_seen_at"]
sets = ["users"]
headers = ["Content-Type"]

[[endpoints]]
endpoint = "GET /api/users"
name = "api.get_users"

[[endpoints]]
endpoint = "GET /api/users/<id>"
name = "api.get_user"

[[endpoints]]
endpoint = "PUT /api/users/<id>"
name = "api.edit_user"

[[endpoints]]
endpoint = "GET /api/avatars"
name = "api.avatars"

[[endpoints]]
endpoint = "POST /api/avatars"
name = "api.avatars"

[[endpoints]]
endpoint = "GET /old"
name = "api.old"
gone = true
"""


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    path = tmp_path / "strangler.toml"
    path.write_text(PLAN)
    return load_plan(path)


def test_defaults_and_paths(plan: Plan, tmp_path: Path):
    assert plan.strategy == "incremental"
    assert plan.monolith == "monolith"
    assert plan.run_dir == (tmp_path / ".strangler").resolve()
    assert plan.stack.web_port == 18000 and plan.stack.dashboard_port == 8081
    assert plan.services == ["users", "socketio"]
    assert plan.backends["monolith"].is_monolith and not plan.backends["users"].is_monolith
    assert plan.backends["users"].instances == 2 and plan.backends["monolith"].instances == 1


def test_endpoint_by_spec_name_or_converter(plan: Plan):
    assert plan.endpoint("GET /api/users/<id>") == Endpoint("GET", "/api/users/<id>")
    assert plan.endpoint("GET /api/users/<int:id>") == Endpoint("GET", "/api/users/<id>")
    assert plan.endpoint("api.edit_user") == Endpoint("PUT", "/api/users/<id>")
    assert plan.endpoint("PREFIX /socket.io/").is_prefix
    assert plan.endpoint(("PUT", "/api/users/<id>")) == Endpoint("PUT", "/api/users/<id>")


def test_unknown_endpoint_lists_close_matches(plan: Plan):
    with pytest.raises(PlanError, match=r'unknown endpoint "GET /api/user/<id>"; did you mean "GET /api/users/<id>"'):
        plan.endpoint("GET /api/user/<id>")
    with pytest.raises(PlanError, match='did you mean "api.get_user"'):
        plan.endpoint("api.get_usr")


def test_gone_endpoints_are_not_known(plan: Plan):
    with pytest.raises(PlanError):
        plan.endpoint("api.old")


def test_ambiguous_name_asks_which(plan: Plan):
    with pytest.raises(PlanError, match='"GET /api/avatars", "POST /api/avatars"'):
        plan.endpoint("api.avatars")


def test_owner_and_service_endpoints(plan: Plan):
    assert plan.owner("api.get_user") == "users"
    assert plan.owner("PUT /api/users/<id>") == "monolith"
    assert plan.owner(Endpoint("PREFIX", "/socket.io/")) == "socketio"
    assert [str(e) for e in plan.service_endpoints("users")] == [
        "GET /api/users", "GET /api/users/<id>", "GET /api/avatars"]
    assert [str(e) for e in plan.service_endpoints("monolith")] == [
        "PUT /api/users/<id>", "POST /api/avatars"]
    with pytest.raises(PlanError, match='did you mean "users"'):
        plan.service_endpoints("user")


def test_routes_start_on_the_monolith(plan: Plan):
    routes = {str(r.endpoint): r for r in plan.routes()}
    assert routes["GET /api/users"] == Route(Endpoint("GET", "/api/users"), "users", "monolith")
    assert routes["PUT /api/users/<id>"].owner == "monolith"
    assert routes["PREFIX /socket.io/"].initial == "monolith"
    assert "GET /old" not in routes


def test_new_only_routes_new_endpoints_to_their_service(tmp_path: Path):
    text = PLAN.replace('"incremental"', '"new-only"').replace(
        '"GET /api/users", "GET /api/users/<id>", "GET /api/avatars"', '"GET /api/badges"')
    path = tmp_path / "p.toml"
    path.write_text(text)
    routes = {str(r.endpoint): r for r in load_plan(path).routes()}
    assert routes["GET /api/badges"].initial == "users"
    assert routes["GET /api/users"].initial == routes["GET /api/users"].owner == "monolith"


def test_compare_rule_merges_defaults(plan: Plan):
    rule = plan.compare_rule("api.get_users")
    assert rule.ignore == ("request_id", "users[*].last_seen_at")
    assert rule.sets == ("users",) and rule.headers == ("Content-Type",)
    other = plan.compare_rule("GET /api/users/<id>")
    assert other.ignore == ("request_id",) and "Location" in other.headers


def test_command_and_database_url(plan: Plan):
    assert plan.command("monolith", port=5001) == "gunicorn -b 127.0.0.1:5001 mono:app"
    assert plan.database_url("monolith") == f"sqlite:///{plan.run_dir}/data/monolith.sqlite"
    assert plan.database_url("users") is None


def test_malformed_toml_is_one_line_with_position(tmp_path: Path):
    path = tmp_path / "strangler.toml"
    path.write_text('[strangler]\nstrategy = "incremental\n')
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    assert "\n" not in message and "line 2" in message and str(path) in message


def test_missing_file(tmp_path: Path):
    with pytest.raises(PlanError, match="no such plan file"):
        load_plan(tmp_path / "nope.toml")


def test_invalid_plan_names_first_problem_and_count(tmp_path: Path):
    path = tmp_path / "strangler.toml"
    path.write_text(PLAN.replace('"incremental"', '"yolo"').replace('health = "/healthz"\ninstances', 'instances'))
    with pytest.raises(PlanError, match=r"strangler.strategy: unknown strategy.*\(1 more; run strangler plan check\)"):
        load_plan(path)


def test_repository_plan_is_valid():
    """The repository's own strangler.toml: every service's endpoints are real monolith ones."""
    plan = load_plan(Path(__file__).parents[2] / "strangler.toml")
    assert plan.owner("api.get_user") == "users"
    assert plan.owner("POST /api/tokens") == "tokens"
    assert plan.owner("PREFIX /socket.io/") == "socketio"
    assert plan.owner("GET /healthz") == plan.monolith
