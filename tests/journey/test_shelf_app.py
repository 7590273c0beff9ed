"""The second monolith on its own: forms, the session cookie, sqlite3, the JSON API."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shelf import create_app  # noqa: E402


@pytest.fixture
def client(tmp_path):
    return create_app({"TESTING": True, "DATABASE": str(tmp_path / "shelf.sqlite")}).test_client()


def test_a_reader_registers_logs_in_and_adds_a_book_through_forms(client):
    assert client.post("/auth/register", data={"name": "ann", "password": "pw"}).status_code == 302
    login = client.post("/auth/login", data={"name": "ann", "password": "pw"})
    assert login.status_code == 302 and "session=" in login.headers["Set-Cookie"]
    assert client.post("/books/new", data={"title": "Dune", "author": "Herbert"}).status_code == 302
    assert client.get("/api/books").get_json() == {"books": [{"id": 1, "title": "Dune", "author": "Herbert"}]}
    assert b"Dune by Herbert (ann)" in client.get("/").data


def test_anonymous_readers_are_sent_to_the_login_form(client):
    answer = client.get("/books/new")
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/auth/login")


def test_a_wrong_password_is_refused_and_no_session_starts(client):
    client.post("/auth/register", data={"name": "bob", "password": "pw"})
    answer = client.post("/auth/login", data={"name": "bob", "password": "nope"})
    assert answer.status_code == 200 and b"Incorrect name or password." in answer.data
    assert client.get("/books/new").status_code == 302


def test_a_missing_book_is_404_and_there_is_no_health_endpoint(client):
    assert client.get("/api/books/9").status_code == 404
    assert client.get("/healthz").status_code == 404
