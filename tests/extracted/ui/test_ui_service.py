"""The ui service serves the monolith's browser client, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

import monolith
from extracted.ui import create_app

STATIC = Path(monolith.__file__).parent / "static"


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    """Test clients of the ui service and of the monolith."""
    tmp = tmp_path_factory.mktemp("ui")
    ui = create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp / "ui")})
    flack = monolith.create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp / "m"),
                                 "DATABASE_URL": f"sqlite:///{tmp / 'm.sqlite'}"})
    yield ui.test_client(), flack.test_client()
    flack.extensions["link_expander"].shutdown()


def test_index_is_the_monoliths_page(clients):
    ui, flack = clients
    ours, theirs = ui.get("/"), flack.get("/")
    assert ours.status_code == 200 and ours.mimetype == "text/html"
    assert ours.data == theirs.data
    assert b"/static/app.js" in ours.data
    assert b"/static/vendor/socket.io-client/socket.io.min.js" in ours.data


@pytest.mark.parametrize("path", sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file()))
def test_static_files_are_the_monoliths_bytes(clients, path):
    ui, flack = clients
    ours, theirs = ui.get(f"/static/{path}"), flack.get(f"/static/{path}")
    assert ours.status_code == 200
    assert ours.data == (STATIC / path).read_bytes() == theirs.data
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"]


def test_missing_static_file_is_404(clients):
    ui, _flack = clients
    assert ui.get("/static/nope.js").status_code == 404


def test_healthz(clients):
    ui, _flack = clients
    response = ui.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok" and response.json["service"] == "ui"


def test_api_paths_are_not_served_here(clients):
    ui, _flack = clients
    response = ui.get("/api/messages")
    assert response.status_code == 404 and response.json["error"]
