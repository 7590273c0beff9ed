"""The messages service: the messages part of the Flack contract, on its own database.

The service runs in the Flask test client on a temp SQLite file; the users
service it calls (``PUT /internal/users/<id>/seen``) is the real one, served
over real HTTP from a thread, and revocations live in a real etcd (see
``conftest.py``).
"""

from __future__ import annotations

import time

import pytest
import requests
from databases import sqlite_write_lock_held
from hostile import hostile_source
from messages_helpers import SECRET, bearer, post, set_updated_at

from monolith.models import SOURCE_MAX
from monolith.tokens import decode_token, issue_token

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ posting


def test_new_message_is_201_with_location_and_rendered_html(client, make_user):
    user, token = make_user()
    response = post(client, token, "hello *world*!")
    assert response.status_code == 201
    body = response.json
    assert response.headers["Location"] == f"/api/messages/{body['id']}"
    assert body["html"] == "hello <em>world</em>!"
    assert body["source"] == "hello *world*!" and body["user_id"] == user["id"]
    assert body["_links"] == {"self": f"/api/messages/{body['id']}", "user": f"/api/users/{user['id']}"}
    assert set(body) == {"id", "created_at", "updated_at", "source", "html", "user_id", "_links"}
    assert abs(body["created_at"] - time.time()) < 5 and body["updated_at"] == body["created_at"]


def test_new_message_html_is_sanitised(client, make_user):
    _user, token = make_user()
    html = post(client, token, "<script>alert(1)</script> **b**").json["html"]
    assert "<script>" not in html and "<strong>b</strong>" in html


@pytest.mark.parametrize("body", [{}, {"source": ""}, {"source": 5}, {"source": None}, {"text": "x"}])
def test_new_message_bad_source_is_400(client, make_user, body):
    _user, token = make_user()
    response = client.post("/api/messages", json=body, headers=bearer(token))
    assert response.status_code == 400 and response.json["error"]


@pytest.mark.parametrize("raw", ["{oops", "[]", '"text"', ""])
def test_new_message_body_not_an_object_is_400(client, make_user, raw):
    _user, token = make_user()
    response = client.post("/api/messages", data=raw, content_type="application/json",
                           headers=bearer(token))
    assert response.status_code == 400 and response.is_json


def test_source_past_the_cap_is_400_as_in_the_monolith(client, make_user):
    _user, token = make_user()
    response = post(client, token, "x" * (SOURCE_MAX + 1))
    assert response.status_code == 400
    assert response.json == {"error": f"source must be at most {SOURCE_MAX} characters"}
    created = post(client, token, hostile_source("<b>"))
    assert created.status_code == 201 and created.json["html"].startswith("<b>")
    edited = client.put(f"/api/messages/{created.json['id']}", json={"source": "y" * (SOURCE_MAX + 1)},
                        headers=bearer(token))
    assert edited.status_code == 400 and edited.json == response.json


def test_new_message_needs_a_valid_token(client):
    assert client.post("/api/messages", json={"source": "x"}).status_code == 401
    response = client.post("/api/messages", json={"source": "x"}, headers=bearer("bad"))
    assert response.status_code == 401 and response.json["error"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Authentication Required"'
    expired = issue_token(1, "ada", SECRET, ttl=1, now=time.time() - 10)
    assert post(client, expired).status_code == 401
    assert client.get("/api/messages").json["messages"] == []


def test_revoked_token_is_refused(app, client, make_user):
    _user, token = make_user()
    claims = decode_token(token, SECRET)
    app.extensions["revocation_store"].revoke(claims["jti"], claims["exp"])
    response = post(client, token)
    assert response.status_code == 401 and "revoked" in response.json["error"]


def test_token_of_an_unknown_user_is_401(client):
    response = post(client, issue_token(987654, "ghost", SECRET))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Authentication Required"'


def test_oversized_body_is_413_json(client, make_user):
    _user, token = make_user()
    response = post(client, token, "x" * (2 * 1024 * 1024))
    assert response.status_code == 413 and response.is_json


def test_posting_marks_the_user_online_in_users(client, make_user, users_url):
    user, token = make_user()
    assert requests.put(f"{users_url}/internal/users/{user['id']}/offline", timeout=10).status_code == 204
    assert requests.get(f"{users_url}/api/users/{user['id']}", timeout=10).json()["online"] is False
    assert post(client, token).status_code == 201
    shown = requests.get(f"{users_url}/api/users/{user['id']}", timeout=10).json()
    assert shown["online"] is True and shown["last_seen_at"] >= int(time.time()) - 2


def test_a_user_is_marked_seen_in_users_once_a_second(client, make_user, users_url):
    user, token = make_user()
    shown_url, offline_url = (f"{users_url}/api/users/{user['id']}",
                              f"{users_url}/internal/users/{user['id']}/offline")
    for _attempt in range(5):  # until two requests land in one wall-clock second
        began = int(time.time())
        assert client.get("/api/messages", headers=bearer(token)).status_code == 200
        assert requests.put(offline_url, timeout=10).status_code == 204
        assert client.get("/api/messages", headers=bearer(token)).status_code == 200
        if int(time.time()) == began:
            break
    else:
        pytest.fail("no two requests within one second in 5 tries")
    # the second request of that second did not call users again...
    assert requests.get(shown_url, timeout=10).json()["online"] is False
    while int(time.time()) == began:  # ...the first of the next second does
        time.sleep(0.01)
    assert client.get("/api/messages", headers=bearer(token)).status_code == 200
    shown = requests.get(shown_url, timeout=10).json()
    assert shown["online"] is True and shown["last_seen_at"] > began


def test_reads_do_not_wait_for_another_writer_on_sqlite(tmp_path, client, make_user):
    """A writer holding the messages database's lock (another connection) holds up no GET."""
    _user, token = make_user()
    assert post(client, token, "hello").status_code == 201
    with sqlite_write_lock_held(tmp_path / "messages.sqlite") as released:
        for path in ("/api/messages", "/api/messages/1"):
            answer = client.get(path)
            assert answer.status_code == 200 and not released.is_set(), path


def test_seen_marks_are_kept_per_user_and_second_and_bounded():
    from extracted.messages.views import SeenMarks

    marks = SeenMarks(limit=2)
    assert marks.due(1, 100)
    marks.done(1, 100)
    assert not marks.due(1, 100) and marks.due(1, 101) and marks.due(2, 100)
    marks.done(2, 100)
    marks.done(3, 100)  # past the limit: starts afresh
    assert marks.due(1, 100) and not marks.due(3, 100)


# ------------------------------------------------------------------ listing


def test_get_messages_orders_by_updated_at(app, client, make_user):
    _user, token = make_user()
    ids = [post(client, token, f"m{i}").json["id"] for i in range(3)]
    now = int(time.time())
    set_updated_at(app, ids[0], now - 10)
    set_updated_at(app, ids[2], now - 20)
    assert [m["id"] for m in client.get("/api/messages").json["messages"]] == [ids[2], ids[0], ids[1]]


def test_get_messages_ties_are_ordered_by_id(app, client, make_user):
    _user, token = make_user()
    ids = [post(client, token, f"m{i}").json["id"] for i in range(3)]
    for message_id in ids:
        set_updated_at(app, message_id, int(time.time()) - 3)
    assert [m["id"] for m in client.get("/api/messages").json["messages"]] == ids


def test_get_messages_only_last_24_hours(app, client, make_user):
    _user, token = make_user()
    old, recent = (post(client, token, s).json["id"] for s in ("old", "recent"))
    set_updated_at(app, old, int(time.time()) - 25 * 3600)
    assert [m["id"] for m in client.get("/api/messages?updated_since=0").json["messages"]] == [recent]


def test_get_messages_updated_since_is_strictly_greater(app, client, make_user):
    _user, token = make_user()
    first, second = (post(client, token, s).json["id"] for s in ("a", "b"))
    now = int(time.time())
    set_updated_at(app, first, now - 5)
    set_updated_at(app, second, now - 4)
    listed = client.get(f"/api/messages?updated_since={now - 5}").json["messages"]
    assert [m["id"] for m in listed] == [second]


def test_get_messages_user_id_filter(client, make_user):
    ada, ada_token = make_user()
    _bob, bob_token = make_user()
    post(client, ada_token, "from ada")
    post(client, bob_token, "from bob")
    listed = client.get(f"/api/messages?user_id={ada['id']}").json["messages"]
    assert [m["source"] for m in listed] == ["from ada"]


@pytest.mark.parametrize("query", ["updated_since=x", "user_id=ada", "updated_since=" + "9" * 30])
def test_get_messages_bad_filters_are_400(client, query):
    response = client.get(f"/api/messages?{query}")
    assert response.status_code == 400 and response.json["error"]


def test_get_messages_bad_token_is_401(client):
    response = client.get("/api/messages", headers=bearer("nope"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Authentication Required"'


def test_get_message_200_404(client, make_user):
    _user, token = make_user()
    created = post(client, token).json
    assert client.get(f"/api/messages/{created['id']}").json == created
    for missing in ("12345", "0", "-1", "99999999999999999999", "abc"):
        response = client.get(f"/api/messages/{missing}")
        assert response.status_code == 404 and response.is_json


# ------------------------------------------------------------------ editing


def test_edit_message_by_author_is_204(client, make_user):
    _user, token = make_user()
    created = post(client, token, "typo").json
    response = client.put(f"/api/messages/{created['id']}", json={"source": "*fixed*"},
                          headers=bearer(token))
    assert response.status_code == 204 and response.data == b""
    shown = client.get(f"/api/messages/{created['id']}").json
    assert shown["source"] == "*fixed*" and shown["html"] == "<em>fixed</em>"


def test_edit_with_the_same_source_changes_nothing(app, client, make_user):
    _user, token = make_user()
    created = post(client, token, "same").json
    set_updated_at(app, created["id"], created["updated_at"] - 100)
    url = f"/api/messages/{created['id']}"
    assert client.put(url, json={"source": "same"}, headers=bearer(token)).status_code == 204
    assert client.get(url).json["updated_at"] == created["updated_at"] - 100
    assert client.put(url, json={"source": "new"}, headers=bearer(token)).status_code == 204
    assert client.get(url).json["updated_at"] >= created["updated_at"]


def test_edit_message_by_someone_else_is_403(client, make_user):
    _ada, ada_token = make_user()
    _bob, bob_token = make_user()
    created = post(client, ada_token, "mine").json
    response = client.put(f"/api/messages/{created['id']}", json={"source": "yours"},
                          headers=bearer(bob_token))
    assert response.status_code == 403 and response.json["error"]
    assert client.get(f"/api/messages/{created['id']}").json["source"] == "mine"


def test_edit_message_errors(client, make_user):
    _user, token = make_user()
    created = post(client, token).json
    url = f"/api/messages/{created['id']}"
    assert client.put(url, json={"source": "x"}).status_code == 401
    assert client.put("/api/messages/999", json={"source": "x"}, headers=bearer(token)).status_code == 404
    assert client.put("/api/messages/x", json={"source": "x"}, headers=bearer(token)).status_code == 404
    assert client.put(url, json={"source": 1}, headers=bearer(token)).status_code == 400
    assert client.put(url, json=["x"], headers=bearer(token)).status_code == 400
    assert client.put(url, data="{", content_type="application/json",
                      headers=bearer(token)).status_code == 400
    assert client.get(url).json["source"] == created["source"]


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json["service"] == "messages"
