"""A database that stops answering: the app's endpoints answer 503 JSON (never a 500) and recover.

The monolith and the users service each run on a PostgreSQL database reached
through a TCP switch (tests/support/tcp_faults.py). Cutting it closes every
open connection and every new one, as a database server that went away
would; restoring it lets the pool connect afresh.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import requests
import servers
from databases import database
from tcp_faults import Switch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["monolith", "users"])
def served(request, tmp_path_factory, etcd_server, redis_server) -> Iterator[tuple[str, Switch]]:
    """The app on a database behind a switch, over real HTTP; yields (base URL, switch)."""
    tmp_path = tmp_path_factory.mktemp(f"outage-{request.param}")
    with database("postgresql", tmp_path, request.param) as url:
        switch = Switch("127.0.0.1:5432")
        config = {
            "STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": url.replace("127.0.0.1:5432", f"127.0.0.1:{switch.port}"),
            "JWT_SECRET_KEY": "o" * 64, "STRANGLER_ETCD": etcd_server.url,
            "SOCKETIO_MESSAGE_QUEUE": redis_server.url,
        }
        if request.param == "monolith":
            from monolith import create_app
        else:
            from extracted.users import create_app
        app = create_app(config)
        try:
            with servers.serving(app) as base:
                yield base, switch
        finally:
            if "link_expander" in app.extensions:
                app.extensions["link_expander"].shutdown()
            with app.app_context():
                app.extensions["sqlalchemy"].engine.dispose()
            switch.stop()


def _register(base: str) -> requests.Response:
    return requests.post(f"{base}/api/users", json={"nickname": f"n{uuid.uuid4().hex[:8]}",
                                                    "password": "secret-pw"}, timeout=10)


def test_endpoints_answer_503_json_while_the_database_is_gone_and_recover(served):
    base, switch = served
    before = _register(base)
    assert before.status_code == 201, before.text
    assert requests.get(f"{base}/api/users", timeout=10).status_code == 200

    switch.cut()
    try:
        for method, path, body in (("GET", "/api/users", None), ("GET", "/api/users/1", None),
                                   ("POST", "/api/users", {"nickname": "x", "password": "y"})):
            answer = requests.request(method, base + path, json=body, timeout=10)
            assert answer.status_code == 503, (method, path, answer.status_code, answer.text)
            assert answer.json() == {"error": "the database is not answering; retry in a moment"}
            assert answer.headers["Retry-After"] == "1"
    finally:
        switch.restore()

    deadline = time.monotonic() + 10
    while (answer := requests.get(f"{base}/api/users", timeout=10)).status_code != 200:
        assert answer.status_code == 503, answer.text
        assert time.monotonic() < deadline, "the app did not recover once the database was back"
        time.sleep(0.1)
    assert before.json()["nickname"] in [u["nickname"] for u in answer.json()["users"]]
    assert _register(base).status_code == 201
