"""The Flack contract as black-box checks over real HTTP and a real Socket.IO client.

Every check takes the app's base URL (Traefik's web URL, or one backend's)
and talks to it the way a client would: ``requests`` for HTTP and
``socketio.Client`` over the websocket transport. Each check registers its
own users under fresh nicknames, so the checks can run again and again on
the same databases, at any migration state. No pytest fixtures here:
``run_contract(base_url, page_url)`` runs them all, ``CHECKS`` lists them,
and ``linked_page()`` serves the page link expansion fetches.

Call ``pytest.register_assert_rewrite("flack_contract")`` before importing
it from a test to get pytest's detailed assertion messages.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import requests

# the helpers every test folder shares; tests/conftest.py puts them on the
# path under pytest, this does when the module runs as a script
_SUPPORT = str(Path(__file__).resolve().parents[1] / "support")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)
import servers  # noqa: E402

TIMEOUT = 10.0
BEARER = 'Bearer realm="Authentication Required"'
BASIC = 'Basic realm="Authentication Required"'
USER_KEYS = {"id", "created_at", "updated_at", "nickname", "last_seen_at", "online", "_links"}
MESSAGE_KEYS = {"id", "created_at", "updated_at", "source", "html", "user_id", "_links"}
MISSING_ID = 2**31 - 2  # a valid id no test run will reach
PAGE_TITLE = "Strangled figs"
PAGE_DESCRIPTION = "The vine outgrows its host, one endpoint at a time."
SLOW_PAGE_DELAY = 3.0


def unique(prefix: str = "u") -> str:
    """A nickname (or text) no earlier run used."""
    return prefix + uuid.uuid4().hex[:12]


def bearer(token: str) -> dict[str, str]:
    """The header carrying *token*."""
    return {"Authorization": f"Bearer {token}"}


def show(response: requests.Response) -> str:
    """One line describing *response*, for assertion messages."""
    return f"{response.request.method} {response.url} -> {response.status_code} {response.text[:300]!r}"


class Flack:
    """A client of one Flack base URL (the app through Traefik, or one backend)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send one request; ``path`` is relative to the base URL."""
        kwargs.setdefault("timeout", TIMEOUT)
        kwargs.setdefault("headers", {}).setdefault("Accept", "application/json")
        return self.http.request(method, self.base + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET *path*."""
        return self.request("GET", path, **kwargs)

    def register(self, password: str = "pw") -> dict:
        """Register a fresh nickname; return the created user."""
        created = self.request("POST", "/api/users", json={"nickname": unique(), "password": password})
        assert created.status_code == 201, show(created)
        return created.json()

    def login(self, nickname: str, password: str = "pw") -> str:
        """A fresh token for *nickname*."""
        answer = self.request("POST", "/api/tokens", auth=(nickname, password))
        assert answer.status_code == 200, show(answer)
        return answer.json()["token"]

    def user(self, password: str = "pw") -> tuple[dict, str]:
        """Register and log in a fresh user: (user as registered, token)."""
        user = self.register(password)
        return user, self.login(user["nickname"], password)

    def post(self, token: str, source: str) -> dict:
        """Post *source* as the token's user; return the created message."""
        answer = self.request("POST", "/api/messages", json={"source": source}, headers=bearer(token))
        assert answer.status_code == 201, show(answer)
        return answer.json()

    def shown(self, kind: str, id: int) -> dict:
        """``GET /api/<kind>/<id>`` (200 expected)."""
        answer = self.get(f"/api/{kind}/{id}")
        assert answer.status_code == 200, show(answer)
        return answer.json()


class Listener(servers.Listener):
    """A real Socket.IO client (websocket transport) queueing every ``updated_model``."""

    def __init__(self, base: str) -> None:
        super().__init__(base, timeout=TIMEOUT)

    def none_for(self, match: Callable[[dict], bool], seconds: float) -> None:
        """Assert nothing matching *match* is pushed for *seconds*."""
        try:
            event = self.wait_for(match, seconds)
        except AssertionError:
            return  # nothing matched in time: as it should be
        raise AssertionError(f"unexpected push {event}")


@contextlib.contextmanager
def listening(base: str) -> Iterator[Listener]:
    """A connected ``Listener`` for the block."""
    listener = Listener(base)
    try:
        yield listener
    finally:
        listener.close()


def is_user(id: int, **fields: Any) -> Callable[[dict], bool]:
    """Matches a push of user *id* whose model has *fields*."""
    return lambda e: e["class"] == "User" and e["model"]["id"] == id and all(
        e["model"].get(k) == v for k, v in fields.items())


def is_message(id: int) -> Callable[[dict], bool]:
    """Matches a push of message *id*."""
    return lambda e: e["class"] == "Message" and e["model"]["id"] == id


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
    """Poll *predicate* until it is truthy; return its value or fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s"
        time.sleep(0.05)


def assert_json_error(response: requests.Response, status: int) -> None:
    """*response* is *status* with a JSON ``{"error": "<something>"}``."""
    assert response.status_code == status, show(response)
    assert response.headers.get("Content-Type", "").startswith("application/json"), show(response)
    assert isinstance(response.json().get("error"), str) and response.json()["error"], show(response)


def assert_bearer_401(response: requests.Response) -> None:
    """A 401 JSON error with the Bearer challenge."""
    assert_json_error(response, 401)
    assert response.headers.get("WWW-Authenticate") == BEARER, show(response)


# ---- the page link expansion fetches ---------------------------------------------------


@contextlib.contextmanager
def linked_page() -> Iterator[str]:
    """Serve a page titled ``PAGE_TITLE`` (described ``PAGE_DESCRIPTION``) on 127.0.0.1; yield its URL.

    Paths containing ``slow`` answer after ``SLOW_PAGE_DELAY`` seconds.
    """
    body = (f"<html><head><title>{PAGE_TITLE}</title>"
            f'<meta name="description" content="{PAGE_DESCRIPTION}"></head><body>fig</body></html>').encode()
    with servers.serving_page(body, "/fig.html", slow_delay=SLOW_PAGE_DELAY) as url:
        yield url


# ---- HTTP: health, page, users --------------------------------------------------------


def check_healthz(base: str) -> None:
    """``GET /healthz`` is 200 ``{"status": "ok", "version": ...}``."""
    answer = Flack(base).get("/healthz")
    assert answer.status_code == 200, show(answer)
    assert answer.json()["status"] == "ok" and isinstance(answer.json()["version"], str)


def check_index_and_static(base: str) -> None:
    """``GET /`` serves the browser client, and its scripts and styles load."""
    api = Flack(base)
    page = api.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html"), show(page)
    for name, kind in (("app.js", "javascript"), ("socket.io.min.js", "javascript"), ("style.css", "css")):
        (asset,) = set(re.findall(rf'(?:src|href)="(/[^"]*/{re.escape(name)})"', page.text))
        answer = api.get(asset)
        assert answer.status_code == 200 and kind in answer.headers["Content-Type"], show(answer)
        assert len(answer.content) > 100, asset


def check_register(base: str) -> None:
    """``POST /api/users``: 201 + Location + the user (no password); duplicates and bad fields 400."""
    api = Flack(base)
    nickname = unique()
    created = api.request("POST", "/api/users", json={"nickname": nickname, "password": "hunter22"})
    assert created.status_code == 201, show(created)
    user = created.json()
    assert created.headers["Location"] == f"/api/users/{user['id']}"
    assert set(user) == USER_KEYS and user["nickname"] == nickname and user["online"] is False
    assert user["_links"] == {"self": f"/api/users/{user['id']}",
                              "messages": f"/api/messages?user_id={user['id']}", "tokens": "/api/tokens"}
    assert all(type(user[k]) is int for k in ("id", "created_at", "updated_at", "last_seen_at"))
    assert "hunter22" not in created.text and "password" not in created.text
    again = api.request("POST", "/api/users", json={"nickname": nickname, "password": "other"})
    assert_json_error(again, 400)
    for body in ({"password": "pw"}, {"nickname": unique()}, {"nickname": "", "password": "pw"},
                 {"nickname": "   ", "password": "pw"}, {"nickname": 5, "password": "pw"},
                 {"nickname": unique(), "password": ["pw"]}, {"nickname": None, "password": "pw"},
                 {"nickname": unique("x" * 22), "password": "pw"}):  # 33 characters
        assert_json_error(api.request("POST", "/api/users", json=body), 400)
    longest = api.request("POST", "/api/users", json={"nickname": unique("n" * 20), "password": "pw"})
    assert longest.status_code == 201, show(longest)  # 32 characters


def check_get_user(base: str) -> None:
    """``GET /api/users/<id>``: the user, or a JSON 404 for unknown and odd ids."""
    api = Flack(base)
    user = api.register()
    assert api.shown("users", user["id"]) == user
    for path in (f"/api/users/{MISSING_ID}", "/api/users/abc", "/api/users/-1", "/api/users/1.5",
                 "/api/users/0", "/api/users/99999999999999999999999"):
        assert_json_error(api.get(path), 404)


def check_list_users(base: str) -> None:
    """``GET /api/users``: ordered by updated_at then nickname; updated_since strictly greater; bad filters 400."""
    api = Flack(base)
    first, second = api.register(), api.register()
    listed = api.get("/api/users")
    assert listed.status_code == 200 and set(listed.json()) == {"users"}, show(listed)
    users = listed.json()["users"]
    assert all(set(u) == USER_KEYS for u in users)
    assert [(u["updated_at"], u["nickname"]) for u in users] == sorted(
        (u["updated_at"], u["nickname"]) for u in users)
    assert {first["id"], second["id"]} <= {u["id"] for u in users}
    since = first["updated_at"]
    newer = api.get(f"/api/users?updated_since={since}").json()["users"]
    assert all(u["updated_at"] > since for u in newer) and first["id"] not in {u["id"] for u in newer}
    assert first["id"] in {u["id"] for u in api.get(f"/api/users?updated_since={since - 1}").json()["users"]}
    for query in ("online=yes", "updated_since=soon", "updated_since=1e3"):
        assert_json_error(api.get(f"/api/users?{query}"), 400)


def check_online_filter(base: str) -> None:
    """``?online=1`` lists users who logged in, ``?online=0`` those who did not."""
    api = Flack(base)
    present, _token = api.user()
    absent = api.register()

    def ids(flag: int) -> set[int]:
        return {u["id"] for u in api.get(f"/api/users?online={flag}").json()["users"]}

    online, offline = ids(1), ids(0)
    assert present["id"] in online and present["id"] not in offline
    assert absent["id"] in offline and absent["id"] not in online


def check_bad_tokens(base: str) -> None:
    """A bad token, or a malformed Authorization header, is a 401 with the Bearer challenge."""
    api = Flack(base)
    assert_bearer_401(api.get("/api/users", headers=bearer("not-a-token")))
    for header in ("Bearer", "Bearer ", "Token abc", "bearer"):
        assert_json_error(api.get("/api/users", headers={"Authorization": header}), 401)


def check_edit_user(base: str) -> None:
    """``PUT /api/users/<id>``: 204 for yourself; 401 without a token, 403 for others, 404, 400."""
    api = Flack(base)
    ada, token = api.user()
    bob, bob_token = api.user()
    renamed = unique()
    answer = api.request("PUT", f"/api/users/{ada['id']}", json={"nickname": renamed}, headers=bearer(token))
    assert answer.status_code == 204 and answer.content == b"", show(answer)
    assert api.shown("users", ada["id"])["nickname"] == renamed
    assert api.get("/api/users", headers=bearer(token)).status_code == 200  # still valid after a rename
    assert_bearer_401(api.request("PUT", f"/api/users/{ada['id']}", json={"nickname": unique()}))
    assert_json_error(api.request("PUT", f"/api/users/{ada['id']}", json={"nickname": unique()},
                                  headers=bearer(bob_token)), 403)
    assert_json_error(api.request("PUT", f"/api/users/{MISSING_ID}", json={"nickname": unique()},
                                  headers=bearer(token)), 404)
    for body in ({"nickname": bob["nickname"]}, {"nickname": 3}, {"nickname": "y" * 40}, {"password": ""}, [1]):
        assert_json_error(api.request("PUT", f"/api/users/{ada['id']}", json=body, headers=bearer(token)), 400)
    assert api.shown("users", ada["id"])["nickname"] == renamed


def check_password_change_revokes_tokens(base: str) -> None:
    """A password change refuses the old tokens and the old password; the new one logs in."""
    api = Flack(base)
    ada, token = api.user("old-pw")
    answer = api.request("PUT", f"/api/users/{ada['id']}", json={"password": "new-pw"}, headers=bearer(token))
    assert answer.status_code == 204, show(answer)
    assert_bearer_401(api.get("/api/users", headers=bearer(token)))
    assert api.request("POST", "/api/tokens", auth=(ada["nickname"], "old-pw")).status_code == 401
    fresh = api.login(ada["nickname"], "new-pw")
    assert api.get("/api/users", headers=bearer(fresh)).status_code == 200


# ---- HTTP: tokens ---------------------------------------------------------------------


def check_new_token(base: str) -> None:
    """``POST /api/tokens``: a JWT naming the user, marking them online; bad credentials 401 Basic."""
    api = Flack(base)
    user = api.register()
    token = api.login(user["nickname"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == str(user["id"]) and claims["nickname"] == user["nickname"]
    assert claims["jti"] and abs(claims["exp"] - claims["iat"] - 3600) < 0.01  # 1 h
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    shown = api.shown("users", user["id"])
    assert shown["online"] is True and shown["last_seen_at"] >= int(time.time()) - 2
    for headers in ({}, {"Authorization": "Basic !!!notbase64"}, {"Authorization": "Bearer something"}):
        answer = api.request("POST", "/api/tokens", headers=headers)
        assert_json_error(answer, 401)
        assert answer.headers.get("WWW-Authenticate") == BASIC, show(answer)
    for auth in ((user["nickname"], "wrong"), (unique(), "pw")):
        answer = api.request("POST", "/api/tokens", auth=auth)
        assert_json_error(answer, 401)
        assert answer.headers.get("WWW-Authenticate") == BASIC, show(answer)


def check_revoke_token(base: str) -> None:
    """``DELETE /api/tokens``: 204, then that token (only) is refused; no token is 401 Bearer."""
    api = Flack(base)
    user, token = api.user()
    other = api.login(user["nickname"])
    answer = api.request("DELETE", "/api/tokens", headers=bearer(token))
    assert answer.status_code == 204, show(answer)
    refused = api.get("/api/users", headers=bearer(token))
    assert_bearer_401(refused)
    assert "revoked" in refused.json()["error"]
    assert_bearer_401(api.request("DELETE", "/api/tokens", headers=bearer(token)))
    assert api.get("/api/users", headers=bearer(other)).status_code == 200
    assert_bearer_401(api.request("DELETE", "/api/tokens"))


def check_token_use_marks_online(base: str) -> None:
    """Using a token marks its user online again (after a disconnect took them offline)."""
    api = Flack(base)
    user, token = api.user()
    with listening(base) as watcher, listening(base) as leaving:
        assert leaving.call("ping_user", token) == {"ok": True}
        leaving.close()
        watcher.wait_for(is_user(user["id"], online=False))
    before = int(time.time())
    users = api.get("/api/users", headers=bearer(token)).json()["users"]
    (me,) = [u for u in users if u["id"] == user["id"]]
    assert me["online"] is True and me["last_seen_at"] >= before - 1


# ---- HTTP: messages -------------------------------------------------------------------


def check_new_message(base: str) -> None:
    """``POST /api/messages``: 201 + Location + rendered, sanitised html; bad input 400; no token 401."""
    api = Flack(base)
    user, token = api.user()
    answer = api.request("POST", "/api/messages", json={"source": "hello *world*!"}, headers=bearer(token))
    assert answer.status_code == 201, show(answer)
    message = answer.json()
    assert answer.headers["Location"] == f"/api/messages/{message['id']}"
    assert set(message) == MESSAGE_KEYS and message["user_id"] == user["id"]
    assert message["source"] == "hello *world*!" and message["html"] == "hello <em>world</em>!"
    assert message["_links"] == {"self": f"/api/messages/{message['id']}", "user": f"/api/users/{user['id']}"}
    assert all(type(message[k]) is int for k in ("id", "created_at", "updated_at", "user_id"))
    html = api.post(token, "<script>alert(1)</script> **b**")["html"]
    assert "<script>" not in html and "<strong>b</strong>" in html
    for body in ({}, {"source": ""}, {"source": 5}, {"source": None}, {"text": "x"}, [], "text"):
        assert_json_error(api.request("POST", "/api/messages", json=body, headers=bearer(token)), 400)
    assert_bearer_401(api.request("POST", "/api/messages", json={"source": "x"}))
    assert_bearer_401(api.request("POST", "/api/messages", json={"source": "x"}, headers=bearer("bad")))
    huge = api.request("POST", "/api/messages", json={"source": "x" * (2 * 1024 * 1024)}, headers=bearer(token))
    assert_json_error(huge, 413)
    listed = api.get(f"/api/messages?user_id={user['id']}").json()["messages"]
    assert len(listed) == 2 and listed[0]["id"] == message["id"]  # the refused posts stored nothing


def check_list_messages(base: str) -> None:
    """``GET /api/messages``: by updated_at then id; updated_since strictly greater; user_id; bad filters 400."""
    api = Flack(base)
    ada, ada_token = api.user()
    bob, bob_token = api.user()
    mine = [api.post(ada_token, f"ada {n}") for n in range(2)]
    theirs = api.post(bob_token, "bob 0")
    listed = api.get("/api/messages")
    assert listed.status_code == 200 and set(listed.json()) == {"messages"}, show(listed)
    messages = listed.json()["messages"]
    assert all(set(m) == MESSAGE_KEYS for m in messages)
    assert [(m["updated_at"], m["id"]) for m in messages] == sorted((m["updated_at"], m["id"]) for m in messages)
    assert {m["id"] for m in [*mine, theirs]} <= {m["id"] for m in messages}
    by_ada = api.get(f"/api/messages?user_id={ada['id']}").json()["messages"]
    assert [m["id"] for m in by_ada] == [m["id"] for m in mine]
    assert [m["source"] for m in api.get(f"/api/messages?user_id={bob['id']}").json()["messages"]] == ["bob 0"]
    since = mine[0]["updated_at"]
    newer = api.get(f"/api/messages?updated_since={since}").json()["messages"]
    assert all(m["updated_at"] > since for m in newer) and mine[0]["id"] not in {m["id"] for m in newer}
    older = api.get(f"/api/messages?updated_since={since - 1}").json()["messages"]
    assert mine[0]["id"] in {m["id"] for m in older}
    for query in ("updated_since=x", "user_id=ada", "updated_since=" + "9" * 30):
        assert_json_error(api.get(f"/api/messages?{query}"), 400)


def check_get_message(base: str) -> None:
    """``GET /api/messages/<id>``: the message, or a JSON 404."""
    api = Flack(base)
    _user, token = api.user()
    message = api.post(token, "find me")
    assert api.shown("messages", message["id"]) == message
    for path in (f"/api/messages/{MISSING_ID}", "/api/messages/abc", "/api/messages/-3"):
        assert_json_error(api.get(path), 404)


def check_edit_message(base: str) -> None:
    """``PUT /api/messages/<id>``: 204 for its author (re-rendered); 401, 403, 404, 400 otherwise."""
    api = Flack(base)
    _ada, token = api.user()
    _bob, bob_token = api.user()
    message = api.post(token, "typo")
    url = f"/api/messages/{message['id']}"
    answer = api.request("PUT", url, json={"source": "*fixed*"}, headers=bearer(token))
    assert answer.status_code == 204 and answer.content == b"", show(answer)
    shown = api.shown("messages", message["id"])
    assert shown["source"] == "*fixed*" and shown["html"] == "<em>fixed</em>"
    assert shown["updated_at"] >= message["updated_at"]
    assert_json_error(api.request("PUT", url, json={"source": "yours"}, headers=bearer(bob_token)), 403)
    assert_bearer_401(api.request("PUT", url, json={"source": "x"}))
    assert_json_error(api.request("PUT", f"/api/messages/{MISSING_ID}", json={"source": "x"},
                                  headers=bearer(token)), 404)
    for body in ({"source": 1}, ["x"], {"source": ""}):
        assert_json_error(api.request("PUT", url, json=body, headers=bearer(token)), 400)
    assert api.shown("messages", message["id"])["source"] == "*fixed*"


def check_link_expansion(base: str, page_url: str) -> None:
    """A link is linkified now and expanded off the request path; the expansion is pushed."""
    api = Flack(base)
    _user, token = api.user()
    url = f"{page_url}?{unique('q')}"
    with listening(base) as listener:
        message = api.post(token, f"look {url}")
        assert f'<a href="{url}" rel="nofollow">{url}</a>' in message["html"], message["html"]
        quote = (f'<blockquote><p><a href="{url}">{PAGE_TITLE}</a></p>'
                 f"<p>{PAGE_DESCRIPTION}</p></blockquote>")
        pushed = listener.wait_for(lambda e: is_message(message["id"])(e) and "<blockquote>" in e["model"]["html"],
                                   timeout=15)
        assert pushed["model"]["html"].endswith(quote), pushed["model"]["html"]
    assert api.shown("messages", message["id"])["html"] == pushed["model"]["html"]


def check_slow_link_does_not_stall(base: str, page_url: str) -> None:
    """Posting a message whose link answers slowly returns at once (expansion is off the request path)."""
    api = Flack(base)
    _user, token = api.user()
    slow = page_url.rsplit("/", 1)[0] + f"/slow-{unique('p')}.html"
    started = time.monotonic()
    message = api.post(token, f"slow {slow}")
    assert time.monotonic() - started < SLOW_PAGE_DELAY / 2, "posting waited for the linked page"
    assert "<blockquote>" not in message["html"]


# ---- Socket.IO ------------------------------------------------------------------------


def check_pushes(base: str) -> None:
    """Every change of a user or message is pushed as ``updated_model``; a failed one is not."""
    api = Flack(base)
    with listening(base) as listener:
        user = api.register()
        assert listener.wait_for(is_user(user["id"]))["model"] == user
        token = api.login(user["nickname"])
        message = api.post(token, "one")
        assert listener.wait_for(is_message(message["id"]))["model"] == message
        edited = api.request("PUT", f"/api/messages/{message['id']}", json={"source": "two"}, headers=bearer(token))
        assert edited.status_code == 204, show(edited)
        assert listener.wait_for(is_message(message["id"]))["model"]["source"] == "two"
        renamed = unique()
        api.request("PUT", f"/api/users/{user['id']}", json={"nickname": renamed}, headers=bearer(token))
        listener.wait_for(is_user(user["id"], nickname=renamed))
        duplicate = api.request("POST", "/api/users", json={"nickname": renamed, "password": "pw"})
        assert duplicate.status_code == 400, show(duplicate)
        listener.none_for(lambda e: e["class"] == "User" and e["model"]["nickname"] == renamed
                          and e["model"]["id"] != user["id"], 0.5)


def check_every_client_gets_pushes(base: str) -> None:
    """Two connected clients both receive the same push."""
    api = Flack(base)
    with listening(base) as first, listening(base) as second:
        user = api.register()
        assert first.wait_for(is_user(user["id"]))["model"] == second.wait_for(is_user(user["id"]))["model"] == user


def check_ping_user(base: str) -> None:
    """``ping_user(token)`` acks ok and marks the user online (pushed); bad or revoked tokens ack an error."""
    api = Flack(base)
    user, token = api.user()
    with listening(base) as watcher:
        with listening(base) as first:
            assert first.call("ping_user", token) == {"ok": True}
        watcher.wait_for(is_user(user["id"], online=False))
        with listening(base) as second:
            assert second.call("ping_user", token) == {"ok": True}
            watcher.wait_for(is_user(user["id"], online=True))
            shown = api.shown("users", user["id"])
            assert shown["online"] is True and shown["last_seen_at"] >= int(time.time()) - 2
            for bad in ("bad", 42, {"x": 1}):
                assert "error" in second.call("ping_user", bad)
            assert "error" in second.client.call("ping_user", timeout=TIMEOUT)  # no token at all
            assert second.client.connected
            api.request("DELETE", "/api/tokens", headers=bearer(token))
            assert "revoked" in second.call("ping_user", token)["error"]


def check_post_message_over_socket(base: str) -> None:
    """``post_message(data, token)`` stores the message and acks it; bad data or token post nothing."""
    api = Flack(base)
    user, token = api.user()
    with listening(base) as client:
        ack = client.call("post_message", {"source": "hi *there*"}, token)
        assert ack["html"] == "hi <em>there</em>" and ack["user_id"] == user["id"], ack
        assert api.shown("messages", ack["id"]) == ack
        assert client.wait_for(is_message(ack["id"]))["model"] == ack
        for data in ({}, {"source": 3}, "text", None, [1]):
            assert "error" in client.call("post_message", data, token), data
        assert "error" in client.call("post_message", {"source": "x"}, "bad")
        assert "error" in client.call("post_message", {"source": "x"})
    listed = api.get(f"/api/messages?user_id={user['id']}").json()["messages"]
    assert [m["id"] for m in listed] == [ack["id"]]


def check_disconnect(base: str) -> None:
    """The last socket of a user disconnecting marks them offline (pushed); an earlier one does not."""
    api = Flack(base)
    user, token = api.user()
    with listening(base) as watcher:
        first, second = Listener(base), Listener(base)
        try:
            assert first.call("ping_user", token) == {"ok": True}
            assert second.call("ping_user", token) == {"ok": True}
            first.close()
            watcher.none_for(is_user(user["id"], online=False), 1.0)
            assert api.shown("users", user["id"])["online"] is True
        finally:
            second.close()
        watcher.wait_for(is_user(user["id"], online=False))
    assert api.shown("users", user["id"])["online"] is False
    assert user["id"] not in {u["id"] for u in api.get("/api/users?online=1").json()["users"]}


# ---- bad input ------------------------------------------------------------------------


def check_bad_input_is_never_a_500(base: str) -> None:
    """Malformed or non-object JSON, wrong types, odd ids, wrong methods: 4xx JSON errors, never 500."""
    api = Flack(base)
    user, token = api.user()
    message = api.post(token, "target")
    auth = bearer(token)
    json_type = {"Content-Type": "application/json"}
    for raw in ("{nickname", "[1, 2]", '"ada"', "null", "", "42"):
        assert_json_error(api.request("POST", "/api/users", data=raw, headers=dict(json_type)), 400)
        for path in (f"/api/users/{user['id']}", f"/api/messages/{message['id']}"):
            assert_json_error(api.request("PUT", path, data=raw, headers={**json_type, **auth}), 400)
        assert_json_error(api.request("POST", "/api/messages", data=raw, headers={**json_type, **auth}), 400)
    for method, path in (("GET", "/api/messages/x1"), ("PUT", "/api/messages/1e3"), ("PUT", "/api/users/abc"),
                         ("GET", "/api/users/%00"), ("GET", "/api/nothing/here")):
        assert_json_error(api.request(method, path, json={"source": "x"}, headers=dict(auth)), 404)
    for method, path, allowed in (("DELETE", "/api/users", "GET"), ("PATCH", "/api/messages", "GET"),
                                  ("DELETE", f"/api/messages/{message['id']}", "PUT"),
                                  ("GET", "/api/tokens", "POST")):
        answer = api.request(method, path, headers=dict(auth))
        assert_json_error(answer, 405)
        assert allowed in answer.headers.get("Allow", ""), show(answer)
    for body in ({"nickname": {"a": 1}, "password": "pw"}, {"nickname": unique(), "password": 12},
                 {"nickname": "z" * 1000, "password": "pw"}):
        assert_json_error(api.request("POST", "/api/users", json=body), 400)
    text = api.request("POST", "/api/users", data="nickname=a", headers={"Content-Type": "text/plain"})
    assert 400 <= text.status_code < 500 and "error" in text.json(), show(text)


# ---- all of it ------------------------------------------------------------------------

CHECKS: dict[str, Callable[..., None]] = {
    f.__name__.removeprefix("check_"): f for f in (
        check_healthz, check_index_and_static, check_register, check_get_user, check_list_users,
        check_online_filter, check_bad_tokens, check_edit_user, check_password_change_revokes_tokens,
        check_new_token, check_revoke_token, check_token_use_marks_online, check_new_message,
        check_list_messages, check_get_message, check_edit_message, check_link_expansion,
        check_slow_link_does_not_stall, check_pushes, check_every_client_gets_pushes, check_ping_user,
        check_post_message_over_socket, check_disconnect, check_bad_input_is_never_a_500,
    )
}

NEEDS_PAGE = {"link_expansion", "slow_link_does_not_stall"}  # these also take the linked page's URL


def run_check(name: str, base_url: str, page_url: str) -> None:
    """Run the check called *name* (a key of ``CHECKS``) against *base_url*."""
    check = CHECKS[name]
    check(base_url, page_url) if name in NEEDS_PAGE else check(base_url)


def run_contract(base_url: str, page_url: str) -> None:
    """Run every check against *base_url*; *page_url* is a page from ``linked_page()``.

    Raises AssertionError naming the first check that fails.
    """
    for name in CHECKS:
        try:
            run_check(name, base_url, page_url)
        except AssertionError as exc:
            raise AssertionError(f"contract check {name} failed against {base_url}: {exc}") from exc


if __name__ == "__main__":  # python tests/contract/flack_contract.py http://127.0.0.1:8000
    import sys

    with linked_page() as page:
        run_contract(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000", page)
    print(json.dumps({"ok": True, "checks": len(CHECKS)}))
