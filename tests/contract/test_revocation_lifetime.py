"""A revocation in etcd lives as long as the tokens it refuses, whatever ``TOKEN_TTL`` is.

The monolith on the platform and the users service run over real HTTP with a
``TOKEN_TTL`` of two hours, on a real etcd; after a password change (which
revokes every token of the user) and a logout, the etcd leases holding those
revocations must last at least that long, or a revoked token turns valid
again while it has not yet expired.
"""

from __future__ import annotations

import base64

import pytest
import requests
from servers import serving

from router.revocation import user_key

pytestmark = pytest.mark.integration

TOKEN_TTL = 7200
SECRET = "r" * 64


def _basic(nickname: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{nickname}:{password}".encode()).decode()}


def _lease_seconds_left(etcd_url: str, key: str) -> int:
    """Seconds etcd will still keep *key* (asks the lease the key is bound to)."""
    entry = requests.post(f"{etcd_url}/v3/kv/range",
                          json={"key": base64.b64encode(key.encode()).decode()}, timeout=5).json()
    lease = int(entry["kvs"][0]["lease"])
    assert lease, f"{key} is not bound to a lease"
    answer = requests.post(f"{etcd_url}/v3/lease/timetolive", json={"ID": lease}, timeout=5).json()
    return int(answer["TTL"])


def _settings(tmp_path, etcd_url: str, name: str) -> dict:
    return {
        "STRANGLER_ENV": "testing",
        "STRANGLER_DATA_DIR": str(tmp_path / name),
        "DATABASE_URL": f"sqlite:///{tmp_path / f'{name}.sqlite'}",
        "JWT_SECRET_KEY": SECRET,
        "STRANGLER_ETCD": etcd_url,
        "TOKEN_TTL": str(TOKEN_TTL),
    }


def test_the_monoliths_revocations_outlive_a_long_token(tmp_path, etcd_server):
    from monolith import create_app

    app = create_app(_settings(tmp_path, etcd_server.url, "monolith"))
    with serving(app) as base:
        user = requests.post(f"{base}/api/users", json={"nickname": "longlived", "password": "pw"},
                             timeout=10).json()
        token = requests.post(f"{base}/api/tokens", headers=_basic("longlived", "pw"),
                              timeout=10).json()["token"]
        changed = requests.put(f"{base}/api/users/{user['id']}", json={"password": "pw2"},
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert changed.status_code == 204, changed.text
        assert _lease_seconds_left(etcd_server.url, user_key(user["id"])) >= TOKEN_TTL - 5
        refused = requests.get(f"{base}/api/users/{user['id']}",
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert refused.status_code == 401
    app.extensions["link_expander"].shutdown(wait=True)


def test_the_users_services_revocations_outlive_a_long_token(tmp_path, etcd_server):
    from extracted.users import create_app
    from monolith.tokens import issue_token

    app = create_app(_settings(tmp_path, etcd_server.url, "users"))
    with serving(app) as base:
        user = requests.post(f"{base}/api/users", json={"nickname": "longuser", "password": "pw"},
                             timeout=10).json()
        token = issue_token(user["id"], "longuser", SECRET, ttl=TOKEN_TTL)
        changed = requests.put(f"{base}/api/users/{user['id']}", json={"password": "pw2"},
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert changed.status_code == 204, changed.text
        assert _lease_seconds_left(etcd_server.url, user_key(user["id"])) >= TOKEN_TTL - 5
