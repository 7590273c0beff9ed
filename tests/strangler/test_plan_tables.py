"""``[tables.<name>]`` in the plan: which endpoint inserts each table's rows, checked by key path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from strangler.plan import Plan, PlanError, load_plan
from strangler.plan.schema import check_plan

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "backends": {
        "monolith": {"command": "mono {port}", "health": "/healthz", "app": "mono:create_app",
                     "tables": ["users", "messages"], "database": "sqlite:///{run_dir}/m.sqlite"},
        "users": {"command": "users {port}", "health": "/healthz", "tables": ["users"],
                  "database": "sqlite:///{run_dir}/u.sqlite",
                  "endpoints": ["POST /api/users", "GET /api/users"]},
        "socketio": {"command": "sio {port}", "health": "/healthz", "endpoints": ["PREFIX /socket.io/"]},
    },
    "endpoints": [{"endpoint": "POST /api/users"}, {"endpoint": "GET /api/users"},
                  {"endpoint": "POST /api/messages"}],
    "tables": {"users": {"inserted_by": ["POST /api/users"]},
               "messages": {"inserted_by": ["POST /api/messages"]}},
}


def data(**tables: object) -> dict:
    """BASE with its [tables] replaced by *tables* (when given)."""
    plan = copy.deepcopy(BASE)
    if tables:
        plan["tables"] = tables
    return plan


def test_the_repository_plan_declares_one_inserter_per_table() -> None:
    plan = load_plan(REPO / "strangler.toml")
    assert {name: [str(e) for e in t.inserted_by] for name, t in plan.tables.items()} == {
        "users": ["POST /api/users"], "messages": ["POST /api/messages"]}
    assert plan.inserted_tables("api.new_user") == ["users"]
    assert plan.inserted_tables("GET /api/users") == []
    assert plan.data_services() == ["users", "messages"]


def test_a_good_tables_section_has_no_problems() -> None:
    assert check_plan(data()) == []
    plan = Plan.from_data(data())
    assert plan.inserted_tables("POST /api/messages") == ["messages"]
    assert plan.data_services() == ["users"]  # socketio owns no database


@pytest.mark.parametrize("tables, path, words", [
    ({"posts": {"inserted_by": ["POST /api/users"]}}, "tables.posts", "not a table of any backend"),
    ({"users": {"inserted_by": ["POST /api/userz"]}}, "tables.users.inserted_by[0]", "not an endpoint of the plan"),
    ({"users": {"inserted_by": ["post /api/users"]}}, "tables.users.inserted_by[0]", "upper case"),
    ({"users": {"inserted_by": ["PREFIX /socket.io/"]}}, "tables.users.inserted_by[0]", "not a prefix"),
    ({"users": {"inserted_by": "POST /api/users"}}, "tables.users.inserted_by", "a list of strings"),
    ({"users": {}}, "tables.users.inserted_by", "missing"),
])
def test_bad_tables_are_named_by_key_path(tables: dict, path: str, words: str) -> None:
    problems = check_plan(data(**tables))
    assert [p.path for p in problems] == [path], problems
    assert words in problems[0].message
    with pytest.raises(PlanError, match="tables"):
        Plan.from_data(data(**tables))


def test_a_misspelt_key_is_named_with_the_likely_one() -> None:
    problems = check_plan(data(users={"inserted": ["POST /api/users"]}))
    assert [(p.path, p.message.split(";")[0]) for p in problems] == [
        ("tables.users.inserted", "unknown key"), ("tables.users.inserted_by", "missing")]
    assert 'did you mean "inserted_by"' in problems[0].message


def test_a_plan_without_tables_has_no_inserters() -> None:
    plain = data()
    del plain["tables"]
    plan = Plan.from_data(plain)
    assert plan.tables == {} and plan.inserted_tables("POST /api/users") == []
