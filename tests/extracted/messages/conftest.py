"""Fixtures of the messages service tests: the real users service over HTTP, a fresh messages app."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from messages_helpers import SECRET, service_config
from servers import serving

from extracted.messages import create_app
from extracted.messages.models import db
from monolith.tokens import issue_token


@pytest.fixture(scope="module")
def users_url(etcd_server, tmp_path_factory) -> Iterator[str]:
    """The real users service for this module, over HTTP: the messages service's LB target."""
    from extracted.users import create_app as create_users

    tmp = tmp_path_factory.mktemp("users")
    app = create_users(service_config(tmp, etcd_server.url,
                                      DATABASE_URL=f"sqlite:///{tmp / 'users.sqlite'}"))
    with serving(app) as url:
        yield url


@pytest.fixture
def app(tmp_path, etcd_server, users_url):
    """A messages service on a fresh SQLite file, calling the module's users service.

    It opts in to previews of private addresses: the linked test pages are on 127.0.0.1.
    """
    app = create_app(service_config(tmp_path, etcd_server.url, STRANGLER_LB_URL=users_url,
                                    LINK_EXPANSION_ALLOW_PRIVATE="true",
                                    DATABASE_URL=f"sqlite:///{tmp_path / 'messages.sqlite'}"))
    yield app
    app.extensions["link_expander"].shutdown(wait=True)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    """The Flask test client of ``app``."""
    return app.test_client()


@pytest.fixture
def make_user(users_url):
    """Register a user in the users service; return (user dict, token)."""

    def make(nickname: str | None = None) -> tuple[dict, str]:
        nickname = nickname or "u" + uuid.uuid4().hex[:10]
        created = requests.post(f"{users_url}/api/users",
                                json={"nickname": nickname, "password": "pw"}, timeout=10)
        assert created.status_code == 201, created.text
        user = created.json()
        return user, issue_token(user["id"], nickname, SECRET)

    return make
