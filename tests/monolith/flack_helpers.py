"""Helpers the monolith tests share (headers, received pushes)."""

from __future__ import annotations

import base64


def basic_auth(nickname: str, password: str) -> dict[str, str]:
    """Return the header logging in as *nickname*."""
    raw = base64.b64encode(f"{nickname}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    """Return the header carrying *token*."""
    return {"Authorization": f"Bearer {token}"}


def pushes(sio_client, cls: str | None = None) -> list[dict]:
    """Return the ``updated_model`` models received so far (of class *cls*, if given)."""
    return [
        event["args"][0]["model"]
        for event in sio_client.get_received()
        if event["name"] == "updated_model" and cls in (None, event["args"][0]["class"])
    ]
