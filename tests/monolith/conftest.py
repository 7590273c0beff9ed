"""Fixtures for the monolith: an app on a fresh SQLite file, its clients and users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flack_helpers import basic_auth
from flask import Flask
from flask.testing import FlaskClient

from monolith import create_app, socketio


@pytest.fixture
def app_config(tmp_path: Path) -> dict[str, Any]:
    """Settings of the test app; a test may change them before using ``app``."""
    return {
        "STRANGLER_ENV": "testing",
        "STRANGLER_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'flack.sqlite'}",
    }


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    """A Flack app on its own SQLite file, migrated by ``create_app``."""
    app = create_app(app_config)
    yield app
    app.extensions["link_expander"].shutdown(wait=True)
    with app.app_context():
        from monolith import db

        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """The Flask test client of ``app``."""
    return app.test_client()


@pytest.fixture
def sio(app: Flask, client: FlaskClient):
    """A connected Flask-SocketIO test client of ``app``."""
    sio_client = socketio.test_client(app, flask_test_client=client)
    yield sio_client
    if sio_client.is_connected():
        sio_client.disconnect()


@pytest.fixture
def make_user(client: FlaskClient) -> Callable[..., tuple[dict, str]]:
    """Register a user and log in; return (user dict, token)."""

    def make(nickname: str, password: str = "secret") -> tuple[dict, str]:
        created = client.post("/api/users", json={"nickname": nickname, "password": password})
        assert created.status_code == 201, created.json
        login = client.post("/api/tokens", headers=basic_auth(nickname, password))
        assert login.status_code == 200, login.json
        return created.json, login.json["token"]

    return make
