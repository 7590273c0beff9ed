"""The console's guards: password beyond loopback, loopback Host, same Origin and the CSRF token on POSTs.

Refusals come before any source is read, so these need no stack: the
console points at a run dir with nothing running.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from strangler.console import ConsoleConfigError, create_app

HOST = "127.0.0.1:8082"


@pytest.fixture
def client(tmp_path: Path):
    app = create_app({"RUN_DIR": str(tmp_path), "HOST": "127.0.0.1", "PASSWORD": None})
    return app.test_client()


def token(client) -> str:
    page = client.get("/", base_url=f"http://{HOST}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    return text.split('name="csrf-token" content="')[1].split('"')[0]


def test_a_cross_site_post_is_refused_even_with_the_token(client) -> None:
    csrf = token(client)
    refused = client.post("/api/rollback", json={"change": 1}, base_url=f"http://{HOST}",
                          headers={"Origin": "http://evil.example", "X-CSRF-Token": csrf})
    assert refused.status_code == 403 and "cross-site" in refused.json["error"]


def test_a_post_without_the_sessions_token_is_refused(client) -> None:
    token(client)
    for headers in ({}, {"X-CSRF-Token": "guessed"}, {"Origin": f"http://{HOST}"}):
        refused = client.post("/api/flip", json={"service": "users", "to": "users"},
                              base_url=f"http://{HOST}", headers=headers)
        assert refused.status_code == 403 and "CSRF" in refused.json["error"]


def test_a_post_with_token_and_own_origin_reaches_the_action(client) -> None:
    csrf = token(client)
    answer = client.post("/api/rollback", json={"change": "x"}, base_url=f"http://{HOST}",
                         headers={"Origin": f"http://{HOST}", "X-CSRF-Token": csrf})
    assert answer.status_code == 409 and "change id" in answer.json["error"]  # the action's own refusal


def test_another_host_name_is_refused_on_loopback(client) -> None:
    answer = client.get("/api/state", base_url="http://attacker.example:8082")
    assert answer.status_code == 403
    assert client.get("/healthz", base_url="http://attacker.example:8082").status_code == 200


def test_binding_beyond_loopback_needs_a_password(tmp_path: Path) -> None:
    with pytest.raises(ConsoleConfigError, match="STRANGLER_CONSOLE_PASSWORD"):
        create_app({"RUN_DIR": str(tmp_path), "HOST": "0.0.0.0", "PASSWORD": None})
    client = create_app({"RUN_DIR": str(tmp_path), "HOST": "0.0.0.0", "PASSWORD": "s3cret"}).test_client()
    assert client.get("/", base_url="http://console.lan:8082").status_code == 401
    ok = client.get("/", base_url="http://console.lan:8082", auth=("any", "s3cret"))
    assert ok.status_code == 200
    assert "script-src 'self'" in ok.headers["Content-Security-Policy"]
