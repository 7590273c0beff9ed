"""Shared auth on a real stack split between the monolith and the services.

``users``, ``messages`` and ``socketio`` are flipped to their services while
``/api/tokens`` stays on the monolith; the tokens service is reached at its
own address. A token from either side is accepted by the other, and a token
revoked through either is refused by every backend within 1 s. Users exist
on both sides at once: `strangler up` links the databases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import flack_contract as fc
import pytest
import requests

pytestmark = pytest.mark.integration

REFUSED_WITHIN = 1.0  # seconds, from the revocation's 204 to the last backend's refusal


@pytest.fixture(scope="module")
def split(platform):
    """The module's stack with users, messages and socketio on services, tokens on the monolith."""
    for service in ("users", "messages", "socketio"):
        platform.strangler("flip", "--service", service, "--to", service)
    serving = platform.serving()
    assert serving["POST /api/tokens"] == serving["DELETE /api/tokens"] == "monolith"
    assert serving["GET /api/users"] == "users" and serving["POST /api/messages"] == "messages"
    assert serving["PREFIX /socket.io/"] == "socketio"
    return platform


def twin_user(platform, password: str = "pw") -> dict:
    """Register one user on the monolith; `strangler up` linked the databases, so the users
    service has the same row (same id) as soon as the registration answers."""
    monolith, users = fc.Flack(platform.instance("monolith")), fc.Flack(platform.instance("users"))
    body = {"nickname": fc.unique(), "password": password}
    made = monolith.request("POST", "/api/users", json=body).json()
    there = users.request("GET", f"/api/users/{made['id']}").json()
    assert (there["id"], there["nickname"], there["created_at"]) == (
        made["id"], made["nickname"], made["created_at"]), there
    return made


def accepted_everywhere(platform, token: str) -> None:
    """*token* works on the monolith and on every service's endpoints."""
    auth = fc.bearer(token)
    for backend in ("monolith", "users"):
        answer = requests.get(f"{platform.instance(backend)}/api/users", headers=auth, timeout=10)
        assert answer.status_code == 200, (backend, answer.text)
    for backend in ("monolith", "messages"):
        answer = requests.post(f"{platform.instance(backend)}/api/messages", json={"source": "accepted"},
                               headers=auth, timeout=10)
        assert answer.status_code == 201, (backend, answer.text)
    for backend in ("monolith", "socketio"):
        with fc.listening(platform.instance(backend)) as client:
            assert client.call("ping_user", token) == {"ok": True}, backend


def probes(platform, token: str) -> dict[str, Callable[[], bool]]:
    """For every backend, a call telling whether it refuses *token* now."""
    auth = fc.bearer(token)

    def http(backend: str, method: str, path: str, **kwargs) -> Callable[[], bool]:
        url = platform.instance(backend) + path
        return lambda: requests.request(method, url, headers=auth, timeout=5, **kwargs).status_code == 401

    def socket(backend: str) -> Callable[[], bool]:
        client = fc.Listener(platform.instance(backend))  # connected ahead: time the check, not the connect
        sockets.append(client)
        return lambda: "error" in client.call("ping_user", token)

    sockets: list[fc.Listener] = []
    checks = {
        "monolith GET /api/users": http("monolith", "GET", "/api/users"),
        "monolith POST /api/messages": http("monolith", "POST", "/api/messages", json={"source": "late"}),
        "users GET /api/users": http("users", "GET", "/api/users"),
        "messages POST /api/messages": http("messages", "POST", "/api/messages", json={"source": "late"}),
        "tokens DELETE /api/tokens": http("tokens", "DELETE", "/api/tokens"),
        "monolith socket ping_user": socket("monolith"),
        "socketio socket ping_user": socket("socketio"),
    }
    checks["_sockets"] = sockets  # type: ignore[assignment]
    return checks


def refused_everywhere_within(checks: dict, revoke: Callable[[], requests.Response]) -> dict[str, float]:
    """Revoke, then poll every backend until each refuses; assert each did within REFUSED_WITHIN s."""
    sockets = checks.pop("_sockets")
    refused: dict[str, float] = {}
    try:
        answer = revoke()
        assert answer.status_code == 204, answer.text
        revoked_at = time.monotonic()
        while len(refused) < len(checks) and time.monotonic() - revoked_at < 5 * REFUSED_WITHIN:
            for name, check in checks.items():
                if name not in refused and check():
                    refused[name] = time.monotonic() - revoked_at
    finally:
        for client in sockets:
            client.close()
    late = {name: round(refused.get(name, float("inf")), 3) for name in checks
            if refused.get(name, float("inf")) > REFUSED_WITHIN}
    assert not late, f"still accepted after {REFUSED_WITHIN}s (seconds to refusal): {late}"
    return refused


def test_a_monolith_token_is_accepted_by_the_services(split) -> None:
    user = twin_user(split)
    answer = requests.post(f"{split.web}/api/tokens", auth=(user["nickname"], "pw"), timeout=10)
    assert answer.status_code == 200, answer.text
    assert split.serving()["POST /api/tokens"] == "monolith"
    accepted_everywhere(split, answer.json()["token"])


def test_a_tokens_service_token_is_accepted_by_the_monolith(split) -> None:
    user = twin_user(split)
    token = fc.Flack(split.instance("tokens")).login(user["nickname"])
    accepted_everywhere(split, token)


def test_a_token_revoked_through_the_monolith_is_refused_everywhere_within_1s(split) -> None:
    user = twin_user(split)
    token = fc.Flack(split.instance("tokens")).login(user["nickname"])
    accepted_everywhere(split, token)
    checks = probes(split, token)
    refused_everywhere_within(checks, lambda: requests.delete(  # DELETE /api/tokens is the monolith's
        f"{split.web}/api/tokens", headers=fc.bearer(token), timeout=10))


def test_a_token_revoked_through_the_tokens_service_is_refused_everywhere_within_1s(split) -> None:
    user = twin_user(split)
    token = fc.Flack(split.web).login(user["nickname"])  # issued by the monolith
    accepted_everywhere(split, token)
    checks = probes(split, token)
    refused_everywhere_within(checks, lambda: requests.delete(
        f"{split.instance('tokens')}/api/tokens", headers=fc.bearer(token), timeout=10))


def test_a_password_changed_on_the_users_service_revokes_everywhere_within_1s(split) -> None:
    user = twin_user(split, "old-pw")
    token = fc.Flack(split.web).login(user["nickname"], "old-pw")  # the monolith's token
    checks = probes(split, token)
    refused_everywhere_within(checks, lambda: requests.put(  # PUT /api/users/<id> is the service's
        f"{split.web}/api/users/{user['id']}", json={"password": "new-pw"}, headers=fc.bearer(token), timeout=10))


def test_secrets_are_made_once_per_run_dir_private_and_never_logged(split) -> None:
    """The module's last test: it restarts the stack on the same run dir."""
    path = split.run_dir / "secrets.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    secrets = json.loads(path.read_text())
    assert {"SECRET_KEY", "JWT_SECRET_KEY"} <= set(secrets) and all(len(v) >= 32 for v in secrets.values())
    user = twin_user(split)
    token = fc.Flack(split.web).login(user["nickname"])
    split.restart()  # same run dir: the secrets are read back, not made anew
    assert json.loads(path.read_text()) == secrets
    accepted_everywhere(split, token)  # signed before the restart, verified after it
    logs = list(split.run_dir.rglob("*.log")) + list((split.run_dir / "logs").iterdir())
    assert len(logs) > 5
    for log in set(logs):
        text = log.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in text, f"{name} appears in {log}"
