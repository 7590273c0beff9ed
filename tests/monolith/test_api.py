"""``monolith.api`` errors and health: JSON for API clients, never HTML or a traceback."""

from __future__ import annotations

import socket

from monolith import create_app
from strangler import __version__


def test_healthz_ok_with_version(client, monkeypatch):
    monkeypatch.delenv("STRANGLER_RELEASE", raising=False)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "version": __version__, "release": ""}
    monkeypatch.setenv("STRANGLER_RELEASE", "blue-7")  # what the stack gives each instance
    assert client.get("/healthz").json["release"] == "blue-7"


def test_healthz_503_when_the_database_does_not_answer(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    app = create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path),
                      "DATABASE_URL": f"postgresql+psycopg2://nobody@127.0.0.1:{port}/none",
                      "AUTO_MIGRATE": False})
    try:
        response = app.test_client().get("/healthz")
        assert response.status_code == 503
        assert response.json["status"] != "ok" and "nobody" not in response.get_data(as_text=True)
    finally:
        app.extensions["link_expander"].shutdown()


def test_unknown_api_path_is_404_json(client):
    response = client.get("/api/nothing/here")
    assert response.status_code == 404
    assert response.is_json and response.json["error"]


def test_unknown_page_for_a_browser_stays_html(client):
    response = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert response.status_code == 404 and not response.is_json


def test_unknown_page_for_a_json_client_is_json(client):
    response = client.get("/no-such-page", headers={"Accept": "application/json"})
    assert response.status_code == 404 and response.is_json


def test_wrong_method_is_405_json_with_allow(client):
    response = client.patch("/api/messages")
    assert response.status_code == 405
    assert response.is_json and "GET" in response.headers["Allow"]


def test_crash_is_500_json_without_traceback(app):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/boom")
    assert response.status_code == 500
    assert response.json == {"error": "internal server error"}
    assert "secret internals" not in response.get_data(as_text=True)
