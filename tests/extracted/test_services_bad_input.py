"""Hostile input never makes a service fail: never a 5xx, every error the API's JSON shape.

Every service (users, tokens, messages, socketio, ui) runs in this process
and answers for real over HTTP behind one load balancer (a dispatching WSGI
server on a free port: ``/api/messages`` to messages, ``/api/tokens`` to
tokens, the rest to users), with revocations in a real etcd. Property tests
(Hypothesis) throw arbitrary JSON, text, ids, query strings and tokens at
every rule of each service through its WSGI stack, and arbitrary arguments
at the socketio service's events; explicit cases go over real HTTP.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from types import SimpleNamespace

import jwt
import pytest
import requests
from hostile import (
    JSON,
    PROPERTY_SETTINGS,
    QUERIES,
    TALLY,
    TEXT,
    authorizations,
    bodies,
    paths,
    report,
    throw,
)
from hypothesis import given
from hypothesis import strategies as st
from servers import serving

from monolith.tokens import issue_token

pytestmark = pytest.mark.integration

SECRET = "jwt-" + uuid.uuid4().hex
SERVICES = ("users", "tokens", "messages", "socketio", "ui")


def _dispatch(apps: dict):
    def route(environ, start_response):
        path = environ["PATH_INFO"]
        target = ("messages" if path.startswith("/api/messages")
                  else "tokens" if path.startswith("/api/tokens") else "users")
        return apps[target](environ, start_response)

    return route


@pytest.fixture(scope="module")
def platform(etcd_server, tmp_path_factory, request) -> Iterator[SimpleNamespace]:
    """Every service, behind one load balancer over real HTTP; a user ``ada`` in users."""
    from extracted.messages import create_app as create_messages
    from extracted.socketio import create_app as create_socketio
    from extracted.tokens import create_app as create_tokens
    from extracted.ui import create_app as create_ui
    from extracted.users import create_app as create_users

    tmp = tmp_path_factory.mktemp("hostile-services")
    factories = {"users": create_users, "tokens": create_tokens, "messages": create_messages,
                 "socketio": create_socketio, "ui": create_ui}
    apps: dict = {}
    with ExitStack() as stack:
        lb = stack.enter_context(serving(_dispatch(apps)))
        for name in SERVICES:
            apps[name] = factories[name]({
                "STRANGLER_ENV": "testing", "JWT_SECRET_KEY": SECRET, "STRANGLER_ETCD": etcd_server.url,
                "STRANGLER_LB_URL": lb, "STRANGLER_DATA_DIR": str(tmp / name),
                "DATABASE_URL": f"sqlite:///{tmp / name}.sqlite"})
            apps[name].config["PROPAGATE_EXCEPTIONS"] = False  # a crash shows as the client's 500
        stack.callback(apps["messages"].extensions["link_expander"].shutdown)
        created = requests.post(f"{lb}/api/users", json={"nickname": "ada", "password": "pw"}, timeout=10)
        assert created.status_code == 201, created.text
        yield SimpleNamespace(lb=lb, apps=apps, ada=created.json()["id"])
        report(request.config)


def good_token(platform) -> str:
    """A fresh token of ada (fresh: a hostile password change revokes the older ones)."""
    return issue_token(platform.ada, "ada", SECRET)


@pytest.mark.parametrize("service", SERVICES)
@given(data=st.data())
@PROPERTY_SETTINGS
def test_no_request_makes_a_service_fail(platform, service, data) -> None:
    app = platform.apps[service]
    method, path = data.draw(paths(app))
    throw(app.test_client(), method, path, data.draw(bodies()),
          data.draw(authorizations(SECRET, lambda: good_token(platform))), data.draw(QUERIES),
          f"{service} HTTP")


@given(data=st.data())
@PROPERTY_SETTINGS
def test_no_event_leaves_a_socketio_service_client_without_an_ack(platform, data) -> None:
    from extracted.socketio import socketio

    good = st.builds(lambda: good_token(platform))
    token = data.draw(st.one_of(good, good, TEXT, JSON, authorizations(SECRET).map(
        lambda header: header and header.removeprefix("Bearer "))))
    event = data.draw(st.sampled_from(["ping_user", "post_message"]))
    args = [token] if event == "ping_user" else [
        data.draw(st.one_of(*[st.fixed_dictionaries({"source": TEXT})] * 2,
                            st.fixed_dictionaries({"source": JSON}), JSON)), token]
    given_args = args[: data.draw(st.sampled_from([len(args)] * 4 + list(range(len(args)))))]
    client = socketio.test_client(platform.apps["socketio"])
    try:
        ack = client.emit(event, *given_args, callback=True)
    finally:
        client.disconnect()
    TALLY["socketio Socket.IO"] += 1
    assert isinstance(ack, dict) and (
        isinstance(ack.get("error"), str) or ack.get("ok") is True or "id" in ack), ack


# ------------------------------------------------------------- over real HTTP


def signed(sub: str) -> str:
    now = time.time()
    return jwt.encode({"sub": sub, "nickname": "x", "jti": "j", "iat": now, "exp": now + 60},
                      SECRET, algorithm="HS256")


def send(url: str, method: str, body: str | None = None, authorization: str | None = None):
    # the JSON text as given: json.dumps escapes a lone surrogate as \udXXX, as a hostile client would
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    return requests.request(method, url, data=body.encode() if body else None, headers=headers,
                            timeout=30)


def assert_json_error(response, status: int) -> None:
    assert response.status_code == status, response.text
    assert isinstance(response.json()["error"], str) and response.json()["error"]


@pytest.mark.parametrize("body", [
    json.dumps({"nickname": "a\ud800", "password": "pw"}),
    json.dumps({"nickname": "bo", "password": "\udfff"}),
    json.dumps({"nickname": "b\x00", "password": "pw"}),
    "[" * 200_000,
    '{"a":' * 100_000,
])
def test_bad_registrations_are_400_through_the_load_balancer(platform, body: str) -> None:
    assert_json_error(send(f"{platform.lb}/api/users", "POST", body), 400)


def test_bad_edits_and_messages_are_400_through_the_load_balancer(platform) -> None:
    bearer = f"Bearer {good_token(platform)}"
    assert_json_error(send(f"{platform.lb}/api/users/{platform.ada}", "PUT",
                           json.dumps({"nickname": "\ud800"}), bearer), 400)
    assert_json_error(send(f"{platform.lb}/internal/users/authenticate", "POST",
                           json.dumps({"nickname": "ada", "password": "\ud800"})), 400)
    for body in (json.dumps({"source": "\ud83d"}), "[" * 200_000, '{"a":' * 100_000):
        assert_json_error(send(f"{platform.lb}/api/messages", "POST", body, bearer), 400)


@pytest.mark.parametrize("sub", ["9" * 30, "²"])
def test_impossible_user_ids_in_tokens_are_401_through_the_load_balancer(platform, sub: str) -> None:
    bearer = f"Bearer {signed(sub)}"
    for method, path in (("GET", "/api/users"), ("PUT", f"/api/users/{platform.ada}"),
                         ("POST", "/api/messages"), ("DELETE", "/api/tokens")):
        assert_json_error(send(platform.lb + path, method, json.dumps({"source": "x"}), bearer), 401)


def test_malformed_basic_auth_is_401_at_the_tokens_service(platform) -> None:
    assert_json_error(send(f"{platform.lb}/api/tokens", "POST", None, "Basic \xe9"), 401)
