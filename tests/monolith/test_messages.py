"""``/api/messages``: posting, listing (24 h window, filters), showing, editing, link expansion."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flack_helpers import bearer
from hostile import HOSTILE_PIECES, hostile_source
from servers import serving_page

from monolith import db
from monolith.models import SOURCE_MAX, Message


def post(client, token, source="hello"):
    return client.post("/api/messages", json={"source": source}, headers=bearer(token))


def set_updated_at(app, message_id, value):
    with app.app_context():
        db.session.execute(db.update(Message).where(Message.id == message_id).values(updated_at=value))
        db.session.commit()


def test_new_message_is_201_with_location_and_rendered_html(client, make_user):
    user, token = make_user("ada")
    response = post(client, token, "hello *world*!")
    assert response.status_code == 201
    body = response.json
    assert response.headers["Location"] == f"/api/messages/{body['id']}"
    assert body["html"] == "hello <em>world</em>!"
    assert body["source"] == "hello *world*!"
    assert body["user_id"] == user["id"]
    assert body["_links"] == {"self": f"/api/messages/{body['id']}", "user": f"/api/users/{user['id']}"}
    assert set(body) == {"id", "created_at", "updated_at", "source", "html", "user_id", "_links"}


def test_new_message_html_is_sanitised(client, make_user):
    _user, token = make_user("ada")
    html = post(client, token, "<script>alert(1)</script> **b**").json["html"]
    assert "<script>" not in html and "<strong>b</strong>" in html


@pytest.mark.parametrize("body", [{}, {"source": ""}, {"source": 5}, {"source": None}, {"text": "x"}])
def test_new_message_bad_source_is_400(client, make_user, body):
    _user, token = make_user("ada")
    response = client.post("/api/messages", json=body, headers=bearer(token))
    assert response.status_code == 400
    assert response.json["error"]


def test_source_one_past_the_cap_is_400_and_stores_nothing(client, make_user):
    _user, token = make_user("ada")
    response = post(client, token, "x" * (SOURCE_MAX + 1))
    assert response.status_code == 400
    assert response.json == {"error": f"source must be at most {SOURCE_MAX} characters"}
    assert client.get("/api/messages").json["messages"] == []


def test_edit_one_past_the_cap_is_400_and_keeps_the_message(client, make_user):
    _user, token = make_user("ada")
    created = post(client, token, "short").json
    url = f"/api/messages/{created['id']}"
    response = client.put(url, json={"source": "y" * (SOURCE_MAX + 1)}, headers=bearer(token))
    assert response.status_code == 400 and "at most" in response.json["error"]
    assert client.get(url).json["source"] == "short"


@pytest.mark.parametrize("piece", HOSTILE_PIECES)
def test_hostile_message_at_the_cap_is_accepted_and_rendered(client, make_user, piece):
    _user, token = make_user("ada")
    response = post(client, token, hostile_source(piece))
    assert response.status_code == 201, response.json
    assert response.json["source"] == hostile_source(piece) and response.json["html"]


@pytest.mark.parametrize("raw", ["{oops", "[]", '"text"'])
def test_new_message_body_not_an_object_is_400(client, make_user, raw):
    _user, token = make_user("ada")
    response = client.post("/api/messages", data=raw, content_type="application/json",
                           headers=bearer(token))
    assert response.status_code == 400 and response.is_json


def test_new_message_needs_a_valid_token(client):
    assert client.post("/api/messages", json={"source": "x"}).status_code == 401
    response = client.post("/api/messages", json={"source": "x"}, headers=bearer("bad"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Authentication Required"'


def test_oversized_body_is_413_json(client, make_user):
    _user, token = make_user("ada")
    response = post(client, token, "x" * (2 * 1024 * 1024))
    assert response.status_code == 413 and response.is_json


def test_get_messages_orders_by_updated_at(app, client, make_user):
    _user, token = make_user("ada")
    ids = [post(client, token, f"m{i}").json["id"] for i in range(3)]
    now = int(time.time())
    set_updated_at(app, ids[0], now - 10)
    set_updated_at(app, ids[2], now - 20)
    listed = [m["id"] for m in client.get("/api/messages").json["messages"]]
    assert listed == [ids[2], ids[0], ids[1]]


def test_get_messages_only_last_24_hours(app, client, make_user):
    _user, token = make_user("ada")
    old, recent = (post(client, token, s).json["id"] for s in ("old", "recent"))
    set_updated_at(app, old, int(time.time()) - 25 * 3600)
    listed = [m["id"] for m in client.get("/api/messages?updated_since=0").json["messages"]]
    assert listed == [recent]


def test_get_messages_updated_since_is_strictly_greater(app, client, make_user):
    _user, token = make_user("ada")
    first, second = (post(client, token, s).json["id"] for s in ("a", "b"))
    now = int(time.time())
    set_updated_at(app, first, now - 5)
    set_updated_at(app, second, now - 4)
    listed = [m["id"] for m in client.get(f"/api/messages?updated_since={now - 5}").json["messages"]]
    assert listed == [second]


def test_get_messages_user_id_filter(client, make_user):
    ada, ada_token = make_user("ada")
    _bob, bob_token = make_user("bob")
    post(client, ada_token, "from ada")
    post(client, bob_token, "from bob")
    listed = client.get(f"/api/messages?user_id={ada['id']}").json["messages"]
    assert [m["source"] for m in listed] == ["from ada"]


@pytest.mark.parametrize("query", ["updated_since=x", "user_id=ada", "updated_since=" + "9" * 30])
def test_get_messages_bad_filters_are_400(client, query):
    response = client.get(f"/api/messages?{query}")
    assert response.status_code == 400 and response.json["error"]


def test_get_message_200_404(client, make_user):
    _user, token = make_user("ada")
    created = post(client, token).json
    assert client.get(f"/api/messages/{created['id']}").json == created
    assert client.get("/api/messages/12345").status_code == 404
    assert client.get("/api/messages/abc").status_code == 404
    assert client.get("/api/messages/abc").is_json


def test_edit_message_by_author_is_204(client, make_user):
    _user, token = make_user("ada")
    created = post(client, token, "typo").json
    response = client.put(f"/api/messages/{created['id']}", json={"source": "*fixed*"},
                          headers=bearer(token))
    assert response.status_code == 204
    shown = client.get(f"/api/messages/{created['id']}").json
    assert shown["source"] == "*fixed*" and shown["html"] == "<em>fixed</em>"


def test_edit_message_by_someone_else_is_403(client, make_user):
    _ada, ada_token = make_user("ada")
    _bob, bob_token = make_user("bob")
    created = post(client, ada_token, "mine").json
    response = client.put(f"/api/messages/{created['id']}", json={"source": "yours"},
                          headers=bearer(bob_token))
    assert response.status_code == 403 and response.json["error"]
    assert client.get(f"/api/messages/{created['id']}").json["source"] == "mine"


def test_edit_message_errors(client, make_user):
    _user, token = make_user("ada")
    created = post(client, token).json
    url = f"/api/messages/{created['id']}"
    assert client.put(url, json={"source": "x"}).status_code == 401
    assert client.put("/api/messages/999", json={"source": "x"}, headers=bearer(token)).status_code == 404
    assert client.put(url, json={"source": 1}, headers=bearer(token)).status_code == 400
    assert client.put(url, json=["x"], headers=bearer(token)).status_code == 400
    assert client.get(url).json["source"] == created["source"]


@pytest.fixture
def app_config(app_config):
    """The test app, opted in to previews of private addresses: the test pages are on 127.0.0.1."""
    return {**app_config, "LINK_EXPANSION_ALLOW_PRIVATE": "true"}


PAGE = (b"<html><head><title>Local page</title>"
        b'<meta name="description" content="A page for tests"></head><body>hi</body></html>')


@pytest.fixture
def page_url() -> Iterator[str]:
    """A local page; its ``/slow`` twin answers after 2 s."""
    with serving_page(PAGE, "/page", slow_delay=2.0) as url:
        yield url


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_links_are_expanded_in_the_background_and_pushed(client, sio, make_user, page_url):
    from flack_helpers import pushes

    _user, token = make_user("ada")
    url = page_url
    created = post(client, token, f"look {url}").json
    assert "<blockquote>" not in created["html"]

    def expanded():
        html = client.get(f"/api/messages/{created['id']}").json["html"]
        return html if "<blockquote>" in html else None

    html = wait_for(expanded)
    assert "Local page" in html and "A page for tests" in html
    pushed = [m for m in pushes(sio, "Message") if m["id"] == created["id"]]
    assert "<blockquote>" in pushed[-1]["html"]


def test_slow_link_does_not_stall_the_request(client, make_user, page_url):
    _user, token = make_user("ada")
    url = page_url.replace("/page", "/slow")
    started = time.monotonic()
    assert post(client, token, f"slow {url}").status_code == 201
    assert time.monotonic() - started < 1.5
