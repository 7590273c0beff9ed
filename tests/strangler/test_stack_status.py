"""strangler.stack.status: the pure shapes behind `strangler status`."""

from __future__ import annotations

from router.keys import Endpoint, Route
from router.registry import Instance
from strangler.stack.status import backend_rows, data_rows, route_summary, traefik_view


def test_route_summary_counts_endpoints_per_backend_and_state() -> None:
    routes = [
        Route(Endpoint("GET", "/a")),
        Route(Endpoint("GET", "/b")),
        Route(Endpoint("GET", "/c"), backend="users"),
        Route(Endpoint("PUT", "/c"), weights={"users": 10, "monolith": 90}),
        Route(Endpoint("GET", "/d"), mirror="messages"),
    ]
    assert route_summary(routes, monolith="flack") == [
        {"backend": "flack", "state": "monolith", "endpoints": 2},
        {"backend": "messages", "state": "shadow", "endpoints": 1},
        {"backend": "users", "state": "canary", "endpoints": 1},
        {"backend": "users", "state": "flipped", "endpoints": 1},
    ]


def test_backend_rows_show_instances_health_and_unstarted_backends() -> None:
    one = Instance("monolith", "h-5001-a", "http://127.0.0.1:5001", "0.1.0", 11, "h", 100.0)
    two = Instance("monolith", "h-5002-b", "http://127.0.0.1:5002", "0.1.0", 12, "h", 130.0)
    stray = Instance("extra", "h-6000-c", "http://127.0.0.1:6000", "", 13, "h", None)
    rows = backend_rows(
        {"monolith": True, "users": False, "tokens": True},
        [one, two, stray],
        {"h-5001-a": True, "h-5002-b": False},
        {"monolith": {one.url: "UP", two.url: "DOWN"}},
        now=160.0,
    )
    assert [(r["backend"], r["state"]) for r in rows] == [
        ("monolith", "1/2 healthy"), ("users", "not started"), ("tokens", "no instances"),
        ("extra", "0/1 healthy"),
    ]
    first, second = rows[0]["instances"]
    assert (first["address"], first["age"], first["healthy"], first["traefik"]) == (one.url, 60.0, True, "UP")
    assert (second["age"], second["healthy"], second["traefik"]) == (30.0, False, "DOWN")
    assert rows[3]["instances"][0]["age"] is None and rows[3]["instances"][0]["traefik"] == "unknown"


def test_backend_rows_merge_the_supervisors_view_and_show_unregistered_instances() -> None:
    one = Instance("users", "h-5001-a", "http://127.0.0.1:5001", "0.1.0", 11, "h", 100.0, release="r1")
    supervised = {
        "users.0": {"name": "users.0", "backend": "users", "url": one.url, "pid": 11, "release": "r1",
                    "state": "healthy", "restarts": 1, "last_exit": -9},
        "users.1": {"name": "users.1", "backend": "users", "url": "http://127.0.0.1:5002", "pid": 12,
                    "release": "r1", "state": "crashlooping", "restarts": 4, "last_exit": 3,
                    "last_lines": "boom"},
        "etcd": {"name": "etcd", "backend": None, "url": "http://127.0.0.1:2379", "state": "healthy"},
    }
    (row,) = backend_rows({"users": True}, [one], {"h-5001-a": True}, {}, now=110.0, supervised=supervised)
    assert row["state"] == "1/1 healthy"
    live, looping = row["instances"]
    assert {k: live[k] for k in ("name", "release", "state", "restarts", "last_exit", "registered")} == {
        "name": "users.0", "release": "r1", "state": "healthy", "restarts": 1, "last_exit": -9,
        "registered": True}
    assert {k: looping[k] for k in ("name", "address", "state", "restarts", "last_exit", "registered",
                                    "healthy", "last_lines")} == {
        "name": "users.1", "address": "http://127.0.0.1:5002", "state": "crashlooping", "restarts": 4,
        "last_exit": 3, "registered": False, "healthy": False, "last_lines": "boom"}


def test_traefik_view_marks_servers_of_unused_services() -> None:
    unused = {"loadBalancer": {"servers": [{"url": "http://a"}, {"url": "http://b"}]}}
    assert traefik_view(unused) == {"http://a": "unused", "http://b": "unused"}
    used = {**unused, "usedBy": ["r@etcd"], "serverStatus": {"http://a": "UP", "http://b": "DOWN"}}
    assert traefik_view(used) == {"http://a": "UP", "http://b": "DOWN"}
    assert traefik_view({}) == {}


def test_data_rows_show_each_direction_with_lag_age_and_errors() -> None:
    data = {"users": {"tables": ["users"], "follower": "sync-users", "directions": [
        {"name": "monolith -> users", "state": "/r/sync/users-forward.json"},
        {"name": "users -> monolith", "state": "/r/sync/users-reverse.json"}]},
        "messages": {"tables": ["messages"], "follower": "sync-messages", "directions": [
            {"name": "monolith -> messages", "state": "/r/sync/messages-forward.json"}]}}
    passes = {
        "/r/sync/users-forward.json": {"started_at": 100.0, "finished_at": 100.2, "lag": 0.4321, "applied": 3,
                                       "collisions": 2},
        "/r/sync/users-reverse.json": {"started_at": 90.0, "lag": 0.0, "applied": 0,
                                       "error": "cannot reach the monolith database", "error_at": 99.0},
        "/r/sync/messages-forward.json": None,
    }
    rows = data_rows(data, passes, ["etcd", "sync-users"], now=101.0)
    assert [(r["service"], r["direction"], r["follower"]) for r in rows] == [
        ("users", "monolith -> users", "running"), ("users", "users -> monolith", "running"),
        ("messages", "monolith -> messages", "stopped")]
    forward, reverse, never = rows
    assert (forward["lag"], forward["last_pass_age"], forward["applied"], forward["error"]) == (0.43, 1.0, 3, None)
    assert reverse["last_pass_age"] == 11.0 and reverse["error"] == "cannot reach the monolith database"
    assert (forward["collisions"], reverse["collisions"]) == (2, 0)  # a pass from before lanes: none
    assert never["lag"] is None and never["last_pass_age"] is None and never["tables"] == ["messages"]
    assert data_rows({}, {}, [], 0.0) == []
