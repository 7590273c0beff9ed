"""Socket.IO events of the socketio service, answered like the monolith answers them.

``ping_user`` and ``post_message`` verify the token here (signature, expiry,
revocation), then call the users service (``PUT /internal/users/<id>/seen``)
and the messages service (``POST /api/messages``) through the load balancer.
A socket whose token was accepted is remembered; when the last socket of a
user disconnects, users is told (``PUT /internal/users/<id>/offline``).
A refused token or bad data is an ``{"error": ...}`` acknowledgement, as in
the monolith, never an exception (see ``ping_user`` for a service that is down).

The sid map is per process: with several socketio instances, a user's
sockets on another instance are not seen here, and the users service's
inactivity sweep (60 s without a ping) settles the presence.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import requests
from flask import current_app, request

from extracted.common.auth import AuthError, mark_seen, verify_token
from extracted.socketio import socketio
from monolith.models import ValidationError
from monolith.tokens import user_id_of
from router.lbclient import ServiceUnavailable

logger = logging.getLogger(__name__)

_sids_lock = threading.Lock()


def _sid_users() -> dict[str, int]:
    return current_app.extensions.setdefault("socketio_sid_users", {})


def _forget(sid: str) -> tuple[int | None, bool]:
    """Forget *sid*; return its user and whether another socket of that user remains."""
    with _sids_lock:
        sids = _sid_users()
        user_id = sids.pop(sid, None)
        return user_id, user_id is not None and user_id in sids.values()


def _call(method: str, path: str, **kwargs: Any) -> requests.Response:
    return current_app.extensions["lb"].request(method, path, **kwargs)


def _authenticated(token: Any) -> int:
    """Verify *token*, mark its user seen in users and remember this socket; return the user id.

    Raises ``AuthError`` (bad, revoked, or naming an unknown user) or
    ``ServiceUnavailable`` (revocations or users cannot be reached).
    """
    claims = verify_token(token)
    mark_seen(claims)
    with _sids_lock:
        _sid_users()[request.sid] = user_id_of(claims)
    return user_id_of(claims)


def _error_of(answer: requests.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return f"messages answered {answer.status_code}"


@socketio.on("ping_user")
def ping_user(token: Any = None) -> dict[str, Any]:
    """Any client with a valid token: keep that user online.

    Acks ``{"ok": true}``, or ``{"error": ...}`` when the token is refused. When
    users or the revocation store cannot be reached the token was not refused,
    so the ack is ``{"ok": false, "unavailable": ...}`` with no ``error``: the
    browser client ends the session on any ``error``, and a restarting users
    service must not log everyone out.
    """
    try:
        _authenticated(token)
    except AuthError as exc:
        return {"error": str(exc)}
    except ServiceUnavailable as exc:
        return {"ok": False, "unavailable": str(exc)}
    return {"ok": True}


@socketio.on("post_message")
def post_message(data: Any = None, token: Any = None) -> dict[str, Any]:
    """Any client with a valid token: post ``{source}`` to messages. Acks the message dict or an error."""
    try:
        _authenticated(token)
        if not isinstance(data, dict):
            raise ValidationError("data must be an object with a source")
        answer = _call("POST", "/api/messages", json=data, service="messages",
                       headers={"Authorization": f"Bearer {token}"})
    except (AuthError, ServiceUnavailable, ValidationError) as exc:
        return {"error": str(exc)}
    if answer.status_code != 201:
        return {"error": _error_of(answer)}
    return answer.json()


@socketio.on_error_default
def event_failed(error: Exception) -> dict[str, str]:
    """Any event whose handler raised: log it and ack ``{"error": ...}``, as the monolith does.

    A client's callback always hears back instead of waiting on a dead handler.
    """
    logger.error("Socket.IO event %r failed", request.event.get("message"), exc_info=error)
    return {"error": "the server could not handle this event; try again"}


@socketio.on("disconnect")
def on_disconnect(reason: Any = None) -> None:
    """Tell users this socket's user is offline, unless another of their sockets is still open."""
    user_id, still_connected = _forget(request.sid)
    if user_id is None or still_connected:
        return
    try:
        answer = _call("PUT", f"/internal/users/{user_id}/offline", service="users")
    except ServiceUnavailable as exc:  # the users service's inactivity sweep will catch up
        logger.warning("user %s not marked offline: %s", user_id, exc)
        return
    if answer.status_code >= 300:
        logger.warning("user %s not marked offline: users answered %s", user_id, answer.status_code)
