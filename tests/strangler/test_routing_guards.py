"""The data guards of flip and cutover, on a real etcd with the repository's plan.

A flip to a service that owns data needs that data linked with the
monolith's (recorded in etcd by ``strangler up``); a canary on an endpoint
that inserts rows (``[tables.*].inserted_by``) is refused whatever the
links. A refusal is one line and writes nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from routing_helpers import Backends, clean_routing

from router import table
from router.keys import MONOLITH, parse_endpoint
from strangler import routing
from strangler.cli import cli
from strangler.links import LINKS_PREFIX, link_key
from strangler.plan import load_plan
from strangler.routing import apply as routing_plan

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NEW_USER = parse_endpoint("POST /api/users")
LIST_USERS = parse_endpoint("GET /api/users")
NEW_MESSAGE = parse_endpoint("POST /api/messages")
SERVICES = ("users", "tokens", "messages", "socketio", "ui")


def repo_plan_text(strategy: str = "incremental") -> str:
    """The repository's plan, on free ports, with *strategy*."""
    text = (REPO / "strangler.toml").read_text()
    text = re.sub(r"^(\w+_port) = \d+", r"\1 = 0", text, flags=re.M)
    return re.sub(r'^strategy = "[^"]*"', f'strategy = "{strategy}"', text, flags=re.M)


@pytest.fixture
def plans(tmp_path: Path) -> dict:
    """The repository's plan as incremental and big-bang copies (path and loaded Plan)."""
    found = {}
    for strategy in ("incremental", "big-bang"):
        path = tmp_path / f"{strategy}.toml"
        path.write_text(repo_plan_text(strategy))
        found[strategy] = (path, load_plan(path))
    return found


@pytest.fixture(scope="module")
def backends(etcd_server):
    """A healthy registered instance of the monolith and of every service."""
    group = Backends(etcd_server.client())
    for name in ("monolith", *SERVICES):
        group.start(name)
    yield group
    group.stop()


@pytest.fixture
def etcd(etcd_server, backends):
    """etcd with no routes, no history and no data links."""
    client = etcd_server.client()
    clean_routing(client)
    client.delete_prefix(LINKS_PREFIX)
    return client


def link(etcd, service: str, tables: list[str], lanes: bool = False) -> None:
    """Record a link as ``strangler up`` does after copying (with id lanes, as it does now)."""
    record = {"tables": tables, "linked_at": 1.0, "rows": 0}
    if lanes:
        record["lanes"] = {"monolith": [1, 2], service: [2, 2]}
    etcd.put(link_key(service), json.dumps(record))


def refused(etcd, call, *words: str) -> str:
    """Run *call*, expect a RoutingError containing *words*, and nothing written; the message."""
    before = etcd.revision()
    with pytest.raises(routing.RoutingError) as refusal:
        call()
    message = str(refusal.value)
    assert all(word in message for word in words), message
    assert "\n" not in message
    assert etcd.revision() == before
    return message


def test_canary_check_is_pure_and_only_for_inserting_endpoints_without_lanes(plans) -> None:
    _, plan = plans["incremental"]
    routing.check_canary(plan, [NEW_USER], None)  # a whole flip is fine
    routing.check_canary(plan, [LIST_USERS, parse_endpoint("PUT /api/users/<id>")], 10)
    with pytest.raises(routing.RoutingError, match="canary on POST /api/messages would insert messages"):
        routing.check_canary(plan, [LIST_USERS, NEW_MESSAGE], 10)
    with_lanes = {"messages": {"tables": ["messages"], "lanes": {"monolith": [1, 2], "messages": [2, 2]}}}
    routing.check_canary(plan, [LIST_USERS, NEW_MESSAGE], 10, with_lanes)
    with pytest.raises(routing.RoutingError, match="POST /api/users would insert users"):
        routing.check_canary(plan, [NEW_USER], 10, with_lanes)  # users' link has no lanes


def test_flip_to_an_unlinked_service_is_refused(etcd, plans) -> None:
    _, plan = plans["incremental"]
    routing_plan.apply_plan(etcd, plan)
    message = refused(etcd, lambda: routing.flip(etcd, plan, [LIST_USERS], "users"),
                      "users' tables (users) are not linked", "strangler up", "strangler migrate copy users")
    assert message.startswith("users'")
    # another service's link does not count
    link(etcd, "messages", ["messages"])
    refused(etcd, lambda: routing.flip(etcd, plan, plan.service_endpoints("users"), "users"), "users' tables")
    # a link that predates a table the plan now gives the service does not either
    link(etcd, "users", [])
    refused(etcd, lambda: routing.flip(etcd, plan, [NEW_USER], "users"), "not linked")


def test_flip_to_a_linked_service_goes_through(etcd, plans) -> None:
    _, plan = plans["incremental"]
    routing_plan.apply_plan(etcd, plan)
    link(etcd, "users", ["users"])
    outcome = routing.flip(etcd, plan, plan.service_endpoints("users"), "users")
    routes, _ = table.load(etcd)
    assert outcome.change is not None
    assert all(routes[ep].backend == "users" for ep in plan.service_endpoints("users"))


def test_services_without_data_and_the_monolith_need_no_link(etcd, plans) -> None:
    _, plan = plans["incremental"]
    routing_plan.apply_plan(etcd, plan)
    routing.flip(etcd, plan, plan.service_endpoints("tokens"), "tokens")
    link(etcd, "users", ["users"])
    routing.flip(etcd, plan, [LIST_USERS], "users")
    etcd.delete(link_key("users"))
    routing.flip(etcd, plan, [LIST_USERS], "monolith")  # back home is always allowed
    assert table.load(etcd)[0][LIST_USERS].backend == MONOLITH


def test_canary_on_an_inserting_endpoint_is_refused_when_linked_without_id_lanes(etcd, plans) -> None:
    _, plan = plans["incremental"]
    routing_plan.apply_plan(etcd, plan)
    for service in ("users", "messages"):
        link(etcd, service, [service])
    refused(etcd, lambda: routing.flip(etcd, plan, [NEW_USER], "users", weight=10),
            "a canary on POST /api/users would insert users", "without id lanes", "flip it whole")
    refused(etcd, lambda: routing.flip(etcd, plan, [NEW_MESSAGE], "messages", weight=50), "POST /api/messages")
    # and back: a canary from a flipped inserting endpoint to the monolith is the same split
    routing.flip(etcd, plan, [NEW_USER], "users")
    refused(etcd, lambda: routing.flip(etcd, plan, [NEW_USER], "monolith", weight=10), "ids could collide")


def test_canary_on_an_inserting_endpoint_goes_through_with_id_lanes(etcd, plans) -> None:
    _, plan = plans["incremental"]
    routing_plan.apply_plan(etcd, plan)
    link(etcd, "messages", ["messages"], lanes=True)
    routing.flip(etcd, plan, [NEW_MESSAGE], "messages", weight=25)
    route = table.load(etcd)[0][NEW_MESSAGE]
    assert route.weights == {"messages": 25, MONOLITH: 75}


def test_canary_on_a_read_endpoint_is_allowed(etcd, plans) -> None:
    _, plan = plans["incremental"]
    routing_plan.apply_plan(etcd, plan)
    link(etcd, "users", ["users"])
    routing.flip(etcd, plan, [LIST_USERS], "users", weight=25)
    assert table.load(etcd)[0][LIST_USERS].weights == {"users": 25, MONOLITH: 75}


def test_cutover_all_needs_every_data_service_linked(etcd, plans) -> None:
    _, plan = plans["big-bang"]
    routing_plan.apply_plan(etcd, plan)
    link(etcd, "users", ["users"])
    refused(etcd, lambda: routing.cutover_all(etcd, plan), "messages' tables (messages) are not linked")
    link(etcd, "messages", ["messages"])
    outcome = routing.cutover_all(etcd, plan)
    assert outcome.change is not None and table.load(etcd)[0][NEW_MESSAGE].backend == "messages"


def test_the_cli_refuses_in_one_line(etcd, etcd_server, plans) -> None:
    path, plan = plans["incremental"]
    routing_plan.apply_plan(etcd, plan)
    before = etcd.revision()
    conn = ["--plan", str(path), "--etcd", etcd_server.url, "--no-wait"]
    unlinked = CliRunner().invoke(cli, ["flip", "--service", "messages", "--to", "messages", *conn])
    link(etcd, "users", ["users"])
    canary = CliRunner().invoke(cli, ["flip", "api.new_user", "--to", "users", "--weight", "5", *conn])
    for result in (unlinked, canary):
        assert result.exit_code == 1
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error: ")
    assert "messages' tables (messages) are not linked" in unlinked.output
    assert "a canary on POST /api/users" in canary.output
    assert table.history(etcd)[-1].revision <= before
