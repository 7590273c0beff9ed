"""The whole Flack contract through Traefik, on one real stack, state after state.

In order: every endpoint on the monolith (fresh stack); every service flipped
(``strangler flip --service X --to X``); rolled back (``strangler rollback``
until the monolith serves it all again); and big-bang (``strangler cutover
--all`` under a big-bang copy of the plan, then one rollback). In each state
``routes --json`` says who serves each endpoint, Traefik's access log and the
backends' own data confirm it, and every contract check runs.

Each service has its own database (moving data is a later step), so every
check creates its own data in each state.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import flack_contract as fc
import pytest
import requests

pytestmark = pytest.mark.integration

STATES = ["monolith", "services", "rolled-back", "big-bang"]


def concrete(endpoint: str) -> tuple[str, str]:
    """A request (method, path) that hits *endpoint*'s route without changing anything."""
    method, path = endpoint.split(" ", 1)
    if method == "PREFIX":
        return "GET", {"/socket.io/": "/socket.io/?EIO=4&transport=polling&"}.get(path, path + "app.js?")
    return method, path.replace("<id>", str(fc.MISSING_ID)) + "?"


@pytest.fixture(scope="module", params=STATES)
def routing(request: pytest.FixtureRequest, platform) -> Iterator[str]:
    """Bring the module's stack into the state named by the parameter (in STATES order)."""
    state = request.param
    if state == "monolith":
        platform.roll_back_to_the_monolith()  # a no-op on the fresh stack
    elif state == "services":
        platform.flip_every_service()
    elif state == "rolled-back":
        if platform.serving() == platform.initial():
            platform.flip_every_service()  # run on its own (-k): make something to roll back
        assert platform.roll_back_to_the_monolith() == len(("users", "tokens", "messages", "socketio", "ui"))
    else:
        assert platform.serving() == platform.initial()
        out = platform.strangler("cutover", "--all", big_bang=True).output
        assert "cutover --all" in out and "Traefik confirmed it live" in out
    yield state


def expected_backends(platform, state: str) -> dict[str, str]:
    """Who must serve each endpoint in *state*: the plan's owner when flipped, else where it started."""
    return platform.owners() if state in ("services", "big-bang") else platform.initial()


def test_routes_say_who_serves_each_endpoint(platform, routing: str) -> None:
    rows = platform.routes()
    expected = expected_backends(platform, routing)
    assert {e: row["backend"] for e, row in rows.items()} == expected
    flipped = {e for e, backend in expected.items() if backend != "monolith"}
    assert {e for e, row in rows.items() if row["state"] == "flipped"} == flipped
    assert all(row["plan_agrees"] for row in rows.values())
    if routing in ("services", "big-bang"):
        assert set(expected.values()) == {"monolith", "users", "tokens", "messages", "socketio", "ui"}


def test_traefik_sends_each_endpoint_to_that_backend(platform, routing: str) -> None:
    """Every endpoint, probed through Traefik, is answered by the expected backend's instance
    (a service-to-service endpoint through the internal entrypoint, where services call it)."""
    for endpoint, backend in expected_backends(platform, routing).items():
        method, path = concrete(endpoint)
        marker = f"probe{uuid.uuid4().hex}"
        base = platform.internal if "/internal/" in endpoint else platform.web
        answer = requests.request(method, f"{base}{path}{marker}=1", timeout=10)
        assert answer.status_code < 500, (endpoint, answer.status_code, answer.text[:200])
        assert platform.answered_by(marker) == (backend, platform.instance(backend)), endpoint


def test_internal_endpoints_are_not_reachable_from_the_public_entrypoint(platform, routing: str) -> None:
    """Every /internal/ endpoint answers 404 on the public port (the monolith's catch-all, with
    no such route), whoever serves it; the users service never sees the request."""
    internal = [e for e in platform.routes() if "/internal/" in e]
    assert len(internal) == 3
    user, _ = fc.Flack(platform.web).user()
    for endpoint in internal:
        method = endpoint.split()[0]
        path = endpoint.split()[1].replace("<id>", str(user["id"]))
        marker = f"probe{uuid.uuid4().hex}"
        body = {"nickname": user["nickname"], "password": "pw"} if "authenticate" in path else None
        answer = requests.request(method, f"{platform.web}{path}?{marker}=1", json=body, timeout=10)
        assert answer.status_code == 404, (endpoint, answer.status_code, answer.text[:200])
        assert platform.answered_by(marker)[0] == "monolith", endpoint
    for probe in ("/internal/", "/internal/users/1/seen/x", "/INTERNAL/users/authenticate"):
        assert requests.put(platform.web + probe, timeout=10).status_code in (404, 405), probe


def identity(record: dict) -> tuple:
    """What tells one user (or message) from another that happens to have the same id elsewhere."""
    return record["created_at"], record.get("nickname"), record.get("source"), record.get("user_id")


def test_data_is_in_both_linked_databases_at_once(platform, routing: str) -> None:
    """A user and a message created through Traefik are readable at once from the monolith
    and from the owning service, whichever served them: `strangler up` links the databases
    and each backend writes through (docs/data-consistency.md)."""
    api = fc.Flack(platform.web)
    user, token = api.user()
    message = api.post(token, "where do I live?")
    for kind, record, service in (("users", user, "users"), ("messages", message, "messages")):
        for backend in ("monolith", service):
            answer = requests.get(f"{platform.instance(backend)}/api/{kind}/{record['id']}", timeout=10)
            assert answer.status_code == 200, (kind, backend, answer.text[:200])
            assert identity(answer.json()) == identity(record), (kind, backend)


@pytest.mark.parametrize("check", list(fc.CHECKS))
def test_contract(platform, routing: str, page_url: str, check: str) -> None:
    fc.run_check(check, platform.web, page_url)


@pytest.mark.parametrize("routing", ["big-bang"], indirect=True)
def test_one_rollback_undoes_the_big_bang_cutover(platform, routing: str) -> None:
    """The module's last test: one ``strangler rollback`` puts every endpoint back on the monolith."""
    before = json.loads(platform.strangler("history", "--json").stdout)
    platform.strangler("rollback", big_bang=True)
    assert platform.serving() == platform.initial()
    (undo,) = json.loads(platform.strangler("history", "--json").stdout)[len(before):]
    assert undo["rollback_of"] == before[-1]["id"] and before[-1]["what"].startswith("cutover --all")
    for name in ("register", "new_token", "new_message", "pushes"):
        fc.run_check(name, platform.web, "")
    marker = f"probe{uuid.uuid4().hex}"
    requests.get(f"{platform.web}/api/users?{marker}=1", timeout=10)
    assert platform.answered_by(marker) == ("monolith", platform.instance("monolith"))
