"""Token checks while etcd is wholly down: reads fail open on a recent snapshot, writes fail closed.

The monolith runs on the platform's revocation store (STRANGLER_ETCD) over real
HTTP, with an etcd of its own that the test stops and starts again by PID.
While etcd is gone, a GET with a good token is served, a GET with a token
revoked before the outage is still refused (the snapshot knows it), and a
write answers 503 JSON; once etcd is back, writes work again.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests
import servers

from router.etcd import Etcd, EtcdUnavailable
from router.revocation import EtcdRevocationStore
from strangler.stack import procs

pytestmark = pytest.mark.integration


class OwnEtcd:
    def __init__(self, data_dir) -> None:
        self.data_dir, self.ports = data_dir, (procs.free_port(), procs.free_port())
        self.start()

    def start(self) -> None:
        self.proc = procs.start_etcd(self.data_dir, *self.ports, unsafe_no_fsync=True)

    def stop(self) -> None:
        self.proc.stop()


def _login(base: str) -> tuple[int, str]:
    nickname = f"n{uuid.uuid4().hex[:8]}"
    user = requests.post(f"{base}/api/users", json={"nickname": nickname, "password": "pw-secret"}, timeout=10)
    assert user.status_code == 201, user.text
    token = requests.post(f"{base}/api/tokens", auth=(nickname, "pw-secret"), timeout=10)
    assert token.status_code == 200, token.text
    return user.json()["id"], token.json()["token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_reads_are_served_on_the_snapshot_and_writes_refused_while_etcd_is_down(tmp_path):
    etcd = OwnEtcd(tmp_path / "etcd")
    from monolith import create_app

    app = create_app({"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "data"),
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'm.sqlite'}", "JWT_SECRET_KEY": "e" * 64,
                      "STRANGLER_ETCD": etcd.proc.url})
    try:
        with servers.serving(app) as base:
            user_id, good = _login(base)
            _, revoked = _login(base)
            assert requests.delete(f"{base}/api/tokens", headers=_bearer(revoked), timeout=10).status_code == 204
            assert requests.get(f"{base}/api/users", headers=_bearer(good), timeout=10).status_code == 200

            etcd.stop()
            answer = requests.get(f"{base}/api/users", headers=_bearer(good), timeout=10)
            assert answer.status_code == 200, answer.text
            answer = requests.get(f"{base}/api/users", headers=_bearer(revoked), timeout=10)
            assert answer.status_code == 401 and answer.json() == {"error": "token has been revoked"}
            write = requests.put(f"{base}/api/users/{user_id}", json={"nickname": "renamed"},
                                 headers=_bearer(good), timeout=10)
            assert write.status_code == 503, write.text
            assert write.json()["error"].startswith("token revocations cannot be checked: etcd at ")

            etcd.start()
            write = requests.put(f"{base}/api/users/{user_id}", json={"nickname": f"r{uuid.uuid4().hex[:6]}"},
                                 headers=_bearer(good), timeout=10)
            assert write.status_code == 204, write.text
    finally:
        app.extensions["link_expander"].shutdown()
        etcd.stop()


def test_the_snapshot_serves_reads_only_for_stale_for_seconds(tmp_path):
    etcd = OwnEtcd(tmp_path / "etcd")
    reading = True
    store = EtcdRevocationStore(Etcd(etcd.proc.url), stale_for=0.5, snapshot_every=0.1,
                                stale_ok=lambda: reading)
    try:
        store.revoke("gone", time.time() + 600)
        assert store.is_revoked("gone") and not store.is_revoked("fine")
        etcd.stop()
        assert store.is_revoked("gone") and not store.is_revoked("fine")
        reading = False
        with pytest.raises(EtcdUnavailable):
            store.is_revoked("fine")
        reading = True
        deadline = time.monotonic() + 5
        while True:  # the state waited for: the snapshot has grown too old
            try:
                store.is_revoked("fine")
            except EtcdUnavailable:
                break
            assert time.monotonic() < deadline, "the snapshot never went stale"
            time.sleep(0.05)
    finally:
        etcd.stop()
