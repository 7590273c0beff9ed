"""Helpers the messages service tests share (headers, times, a threaded WSGI server)."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import update

from extracted.messages.models import Message, db

# the JWT secret every service of these tests shares
SECRET = "jwt-" + uuid.uuid4().hex


def service_config(tmp_path, etcd_url: str, **extra) -> dict:
    """Settings of a service in these tests (testing profile, the shared secret and etcd)."""
    return {"STRANGLER_ENV": "testing", "STRANGLER_DATA_DIR": str(tmp_path / "data"),
            "JWT_SECRET_KEY": SECRET, "STRANGLER_ETCD": etcd_url, **extra}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(client, token, source="hello"):
    return client.post("/api/messages", json={"source": source}, headers=bearer(token))


def set_updated_at(app, message_id, value):
    with app.app_context():
        db.session.execute(update(Message).where(Message.id == message_id).values(updated_at=value))
        db.session.commit()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
