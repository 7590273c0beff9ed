"""Hostile input never makes the monolith fail: never a 5xx, every error the API's JSON shape.

Property tests (Hypothesis) throw arbitrary JSON, text, ids, query strings
and tokens (garbage, and signed ones with arbitrary claims) at every rule of
the app through its WSGI stack, and arbitrary arguments at its Socket.IO
events; explicit cases go to a real ``strangler monolith`` over HTTP and a
real Socket.IO client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

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
from servers import Listener, monolith_server

from monolith import create_app, socketio
from monolith.tokens import issue_token


@pytest.fixture(scope="module")
def flack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator:
    """One app for the module, with a user ``ada`` (id 1) and her message (id 1)."""
    tmp = tmp_path_factory.mktemp("hostile")
    app = create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp / "data"),
                      "DATABASE_URL": f"sqlite:///{tmp / 'flack.sqlite'}"})
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash must show as the 500 a client gets
    client = app.test_client()
    assert client.post("/api/users", json={"nickname": "ada", "password": "pw"}).status_code == 201
    assert client.post("/api/messages", json={"source": "hi"},
                       headers={"Authorization": "Bearer " + good_token(app)}).status_code == 201
    yield app
    report(request.config)
    app.extensions["link_expander"].shutdown(wait=True)


def good_token(app) -> str:
    """A fresh token of ada (fresh: a hostile password change revokes the older ones)."""
    return issue_token(1, "ada", app.config["JWT_SECRET_KEY"])


@given(data=st.data())
@PROPERTY_SETTINGS
def test_no_request_makes_the_monolith_fail(flack, data) -> None:
    method, path = data.draw(paths(flack))
    secret = flack.config["JWT_SECRET_KEY"]
    throw(flack.test_client(), method, path, data.draw(bodies()),
          data.draw(authorizations(secret, lambda: good_token(flack))), data.draw(QUERIES),
          "monolith HTTP")


@given(data=st.data())
@PROPERTY_SETTINGS
def test_no_event_leaves_a_socket_client_without_an_ack(flack, data) -> None:
    secret = flack.config["JWT_SECRET_KEY"]
    good = st.builds(lambda: good_token(flack))
    token = data.draw(st.one_of(good, good, TEXT, JSON, authorizations(secret).map(
        lambda header: header and header.removeprefix("Bearer "))))
    event = data.draw(st.sampled_from(["ping_user", "post_message"]))
    args = [token] if event == "ping_user" else [
        data.draw(st.one_of(*[st.fixed_dictionaries({"source": TEXT})] * 2,
                            st.fixed_dictionaries({"source": JSON}), JSON)), token]
    given_args = args[: data.draw(st.sampled_from([len(args)] * 4 + list(range(len(args)))))]
    sio = socketio.test_client(flack)
    try:
        ack = sio.emit(event, *given_args, callback=True)
    finally:
        sio.disconnect()
    TALLY["monolith Socket.IO"] += 1
    assert isinstance(ack, dict) and (
        isinstance(ack.get("error"), str) or ack.get("ok") is True or "id" in ack), ack


# ------------------------------------------------------------- over real HTTP


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real ``strangler monolith``: (base URL, its JWT secret, read from its data dir)."""
    tmp = tmp_path_factory.mktemp("real")
    with monolith_server(tmp) as base:
        yield base, json.loads((tmp / "secrets.json").read_text())["JWT_SECRET_KEY"]


def signed(secret: str, sub: str) -> str:
    now = time.time()
    return jwt.encode({"sub": sub, "nickname": "x", "jti": "j", "iat": now, "exp": now + 60},
                      secret, algorithm="HS256")


def raw_post(url: str, body: str, token: str | None = None, method: str = "POST") -> requests.Response:
    # a JSON text as given (json.dumps escapes a lone surrogate as \udXXX, as a hostile client would)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, url, data=body.encode(), headers=headers, timeout=30)


def assert_json_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert isinstance(response.json()["error"], str) and response.json()["error"]


@pytest.mark.integration
@pytest.mark.parametrize("field", ["nickname", "password"])
def test_lone_surrogate_in_a_user_is_400_over_http(real, field: str) -> None:
    base, _secret = real
    fields = {"nickname": "bob", "password": "pw", field: "a\ud800b"}
    assert_json_error(raw_post(f"{base}/api/users", json.dumps(fields)), 400)
    assert requests.get(f"{base}/api/users", timeout=10).json()["users"] == []


@pytest.mark.integration
def test_lone_surrogates_in_edits_and_messages_are_400_over_http(real) -> None:
    base, _secret = real
    created = requests.post(f"{base}/api/users", json={"nickname": "cy", "password": "pw"}, timeout=30)
    user_id = created.json()["id"]
    token = requests.post(f"{base}/api/tokens", auth=("cy", "pw"), timeout=30).json()["token"]
    for field in ("nickname", "password"):
        assert_json_error(raw_post(f"{base}/api/users/{user_id}", json.dumps({field: "\udfff"}), token,
                                   "PUT"), 400)
    assert_json_error(raw_post(f"{base}/api/messages", json.dumps({"source": "\ud83d!"}), token), 400)
    posted = requests.post(f"{base}/api/messages", json={"source": "fine"}, timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
    assert_json_error(raw_post(f"{base}/api/messages/{posted.json()['id']}",
                               json.dumps({"source": "\udc00"}), token, "PUT"), 400)
    listener = Listener(base)
    try:
        assert "surrogate" in listener.call("post_message", {"source": "\ud800"}, token)["error"]
        assert "error" in listener.call("post_message", {"source": "x"}, "\ud800")
        assert listener.call("ping_user", token) == {"ok": True}  # the handlers are alive
    finally:
        listener.close()


@pytest.mark.integration
@pytest.mark.parametrize("body", ["[" * 200_000, '{"a":' * 100_000])
def test_deeply_nested_json_is_400_over_http(real, body: str) -> None:
    base, _secret = real
    for path in ("/api/users", "/api/messages"):
        response = raw_post(base + path, body)
        assert response.status_code in (400, 401), response.text  # messages asks for a token first
        assert response.json()["error"]
    assert_json_error(raw_post(f"{base}/api/users", body), 400)


@pytest.mark.integration
@pytest.mark.parametrize("sub", ["9" * 30, "²", "0", "2147483648"])
def test_token_with_an_impossible_user_id_is_401_over_http_and_socketio(real, sub: str) -> None:
    base, secret = real
    token = signed(secret, sub)
    for method, path in (("GET", "/api/users"), ("POST", "/api/messages"), ("DELETE", "/api/tokens")):
        response = requests.request(method, base + path, json={"source": "x"}, timeout=10,
                                    headers={"Authorization": f"Bearer {token}"})
        assert_json_error(response, 401)
    listener = Listener(base)
    try:
        assert "error" in listener.call("ping_user", token)
        assert "error" in listener.call("post_message", {"source": "x"}, token)
    finally:
        listener.close()
