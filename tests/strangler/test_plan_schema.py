"""check_plan and the endpoint grammar: every problem named by its key path."""

import pytest

from strangler.plan.schema import Problem, check_plan, normalise_rule, parse_endpoint_spec


def good() -> dict:
    """A small valid plan, as tomllib would parse it (fresh per call, so tests may edit it)."""
    return {
        "strangler": {"strategy": "incremental", "run_dir": ".strangler", "monolith": "monolith"},
        "stack": {"web_port": 18000},
        "backends": {
            "monolith": {"command": "gunicorn mono:app -b {host}:{port}", "health": "/healthz",
                         "app": "mono:create_app", "tables": ["users", "messages"],
                         "database": "sqlite:///{run_dir}/data/monolith.sqlite"},
            "users": {"command": "gunicorn users:app", "health": "/healthz", "tables": ["users"],
                      "endpoints": ["GET /api/users", "GET /api/users/<id>"]},
            "socketio": {"command": "run-sio", "health": "/healthz", "endpoints": ["PREFIX /socket.io/"]},
        },
        "endpoints": [
            {"endpoint": "GET /api/users", "name": "api.get_users"},
            {"endpoint": "GET /api/users/<id>", "name": "api.get_user"},
            {"endpoint": "POST /api/messages", "name": "api.new_message"},
        ],
        "compare": {"headers": ["Content-Type"],
                    "GET /api/users": {"ignore": ["users[*].last_seen_at"], "sets": ["users"]}},
    }


def paths(problems: list[Problem]) -> list[str]:
    return [p.path for p in problems]


def test_good_plan_has_no_problems():
    assert check_plan(good()) == []


def test_parse_drops_converters_but_keeps_path():
    assert str(parse_endpoint_spec("GET /api/users/<int:id>")) == "GET /api/users/<id>"
    assert str(parse_endpoint_spec("GET /f/<path:rest>")) == "GET /f/<path:rest>"
    assert normalise_rule("/a/<any(x, y):kind>/<uuid:u>") == "/a/<kind>/<u>"


def test_prefix_spec():
    ep = parse_endpoint_spec("PREFIX /socket.io/")
    assert ep.is_prefix and ep.path == "/socket.io/"


@pytest.mark.parametrize(
    "spec",
    ["get /x", "GET x", "GET  /x", "GET /x extra", "GET /a/<id", "GET /a?b=1",
     "PREFIX /socket.io", "PREFIX /a/<id>/", "FETCH /x", ""],
)
def test_malformed_specs_raise(spec):
    with pytest.raises(ValueError):
        parse_endpoint_spec(spec)


def test_unknown_strategy():
    data = good()
    data["strangler"]["strategy"] = "yolo"
    [problem] = check_plan(data)
    assert problem.path == "strangler.strategy" and "incremental" in problem.message


def test_unknown_keys_named_with_suggestion():
    data = good()
    data["stak"] = {}
    data["backends"]["users"]["healt"] = "/x"
    problems = check_plan(data)
    assert paths(problems) == ["stak", "backends.users.healt"]
    assert 'did you mean "stack"?' in problems[0].message
    assert 'did you mean "health"?' in problems[1].message


def test_endpoint_owned_by_two_services():
    data = good()
    data["backends"]["socketio"]["endpoints"].append("GET /api/users/<id>")
    [problem] = check_plan(data)
    assert problem.path == "backends.socketio.endpoints[1]"
    assert "also owned by users (backends.users.endpoints[1])" in problem.message


def test_endpoint_not_in_monolith_suggests_scan():
    data = good()
    data["backends"]["users"]["endpoints"][1] = "GET /api/user/<id>"
    [problem] = check_plan(data)
    assert str(problem).startswith(
        'backends.users.endpoints[1]: "GET /api/user/<id>" is not an endpoint of the monolith '
        "(run strangler scan?)"
    )
    assert '"GET /api/users/<id>"' in problem.message


def test_malformed_and_non_normal_endpoints():
    data = good()
    data["backends"]["users"]["endpoints"] = ["GET api/users", "GET /api/users/<int:id>"]
    problems = check_plan(data)
    assert paths(problems) == ["backends.users.endpoints[0]", "backends.users.endpoints[1]"]
    assert "must start with /" in problems[0].message
    assert 'write "GET /api/users/<id>"' in problems[1].message


def test_backend_without_command_and_health():
    data = good()
    data["backends"]["users"] = {"endpoints": ["GET /api/users"]}
    assert paths(check_plan(data)) == ["backends.users.command", "backends.users.health"]


def test_bad_ports():
    data = good()
    data["stack"] = {"web_port": 80, "dashboard_port": 70000, "etcd_port": 18000, "redis_port": True}
    data["backends"]["users"]["port"] = 23800  # the default etcd_peer_port
    problems = check_plan(data)
    assert paths(problems) == ["stack.redis_port", "stack.web_port", "stack.dashboard_port",
                               "backends.users.port"]
    assert "integer" in problems[0].message
    assert "port 23800 is also stack.etcd_peer_port" in problems[3].message


def test_stack_settings_out_of_range():
    data = good()
    data["stack"] = {"etcd_members": 8, "log_max_mb": 0, "log_keep": 3}
    problems = check_plan(data)
    assert [str(p) for p in problems] == ["stack.etcd_members: 8 is out of range; give 1 to 7",
                                          "stack.log_max_mb: 0 is out of range; give 1 to 10240"]
    data["stack"] = {"etcd_members": 3, "log_max_mb": 200, "log_keep": 10}
    assert check_plan(data) == []


def test_duplicate_ports_in_stack():
    data = good()
    data["stack"] = {"web_port": 18000, "dashboard_port": 18000}
    [problem] = check_plan(data)
    assert problem.path == "stack.dashboard_port" and "stack.web_port" in problem.message


def test_duplicate_inventory_entries():
    data = good()
    data["endpoints"].append({"endpoint": "GET /api/users/<int:id>", "name": "x"})
    problems = check_plan(data)
    assert paths(problems) == ["endpoints[3].endpoint", "endpoints[3].endpoint"]
    assert "listed twice (also endpoints[1])" in problems[1].message


def test_new_only_keeps_monolith_endpoints_on_the_monolith():
    data = good()
    data["strangler"]["strategy"] = "new-only"
    data["backends"]["users"]["endpoints"] = ["GET /api/users", "GET /api/avatars/<id>"]
    [problem] = check_plan(data)
    assert problem.path == "backends.users.endpoints[0]" and "new-only" in problem.message


def test_incremental_refuses_gone_endpoint():
    data = good()
    data["endpoints"][0]["gone"] = True
    [problem] = check_plan(data)
    assert problem.path == "backends.users.endpoints[0]" and "gone" in problem.message


def test_tables_owned_twice_or_unknown():
    data = good()
    data["backends"]["socketio"]["tables"] = ["users", "rooms"]
    problems = check_plan(data)
    assert paths(problems) == ["backends.socketio.tables[0]", "backends.socketio.tables[1]"]
    assert "also owned by users" in problems[0].message
    assert "not a table of the monolith" in problems[1].message


def test_monolith_rules():
    data = good()
    del data["backends"]["monolith"]["app"]
    data["backends"]["monolith"]["endpoints"] = ["GET /api/users"]
    assert paths(check_plan(data)) == ["backends.monolith.app", "backends.monolith.endpoints"]


def test_monolith_must_be_a_backend():
    data = good()
    data["strangler"]["monolith"] = "flack"
    problems = check_plan(data)
    assert problems[0].path == "strangler.monolith" and "monolith" in problems[0].message


def test_missing_backends():
    assert paths(check_plan({"strangler": {}})) == ["backends"]


def test_placeholders_and_database_url():
    data = good()
    data["backends"]["users"]["command"] = "gunicorn -b :{prot}"
    data["backends"]["users"]["database"] = "users.sqlite"
    data["backends"]["socketio"]["command"] = "run {"
    problems = check_plan(data)
    assert paths(problems) == ["backends.users.command", "backends.users.database",
                               "backends.socketio.command"]
    assert "{prot}" in problems[0].message and "{port}" in problems[0].message


def test_compare_rules_checked():
    data = good()
    data["compare"]["GET /api/nothing"] = {"ignore": ["a..b"]}
    data["compare"]["GET /api/users"]["headers"] = ["Bad Header"]
    data["compare"]["ignor"] = ["x"]
    problems = check_plan(data)
    assert paths(problems) == [
        "compare.ignor",
        "compare.\"GET /api/users\".headers[0]",
        "compare.\"GET /api/nothing\"",
        "compare.\"GET /api/nothing\".ignore[0]",
    ]


def test_inventory_may_not_hold_prefixes():
    data = good()
    data["endpoints"].append({"endpoint": "PREFIX /static/"})
    assert paths(check_plan(data)) == ["endpoints[3].endpoint"]


def test_wrong_types_are_named():
    data = good()
    data["backends"]["users"]["endpoints"] = "GET /api/users"
    data["backends"]["users"]["instances"] = 0
    data["endpoints"][0]["gone"] = "yes"
    problems = check_plan(data)
    assert paths(problems) == ["endpoints[0].gone", "backends.users.endpoints", "backends.users.instances"]


def test_empty_backends_table():
    [problem] = check_plan({"backends": {}})
    assert problem.path == "backends" and "declare at least the monolith" in problem.message


def test_serves_declares_service_only_endpoints_under_any_strategy():
    data = good()
    data["backends"]["users"]["serves"] = ["POST /internal/users/authenticate"]
    assert check_plan(data) == []
    data["backends"]["users"]["serves"].append("POST /api/messages")
    assert paths(check_plan(data)) == ["backends.users.serves[1]"]


def test_serves_cannot_repeat_an_owned_endpoint_or_sit_on_the_monolith():
    data = good()
    data["backends"]["users"]["serves"] = ["GET /api/users"]
    data["backends"]["monolith"]["serves"] = ["GET /x"]
    assert sorted(paths(check_plan(data))) == ["backends.monolith.serves", "backends.users.serves[0]"]
