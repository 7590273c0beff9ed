"""Socket.IO: the client's ``ping_user`` and ``post_message`` events, and presence.

A user is online while they use a token or keep pinging; they go offline when
their last socket disconnects or after ``ONLINE_TIMEOUT`` seconds of silence
(the background task below). Bad tokens or data are answered with an
``{"error": ...}`` acknowledgement, never an exception.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask, current_app, request
from sqlalchemy import select

from monolith import db, socketio
from monolith.auth import AuthError, user_from_token
from monolith.models import User, ValidationError

logger = logging.getLogger(__name__)

# guards the sid -> user maps (one per app, in app.extensions) and the task flag
_sids_lock = threading.Lock()
_offline_task_started = False


def _sid_users() -> dict[str, int]:
    return current_app.extensions.setdefault("monolith_sid_users", {})


def _remember(sid: str, user_id: int) -> None:
    with _sids_lock:
        _sid_users()[sid] = user_id


def _forget(sid: str) -> tuple[int | None, bool]:
    """Forget *sid*; return its user and whether another socket of that user remains."""
    with _sids_lock:
        sids = _sid_users()
        user_id = sids.pop(sid, None)
        return user_id, user_id is not None and user_id in sids.values()


def _authenticated(token: Any) -> User:
    user, _claims = user_from_token(token)
    user.ping()
    db.session.commit()
    _remember(request.sid, user.id)
    return user


@socketio.on("ping_user")
def ping_user(token: Any = None) -> dict[str, Any]:
    """Any client with a valid token: keep that user online. Acks ``{"ok": true}`` or an error."""
    try:
        _authenticated(token)
    except AuthError as exc:
        return {"error": str(exc)}
    return {"ok": True}


@socketio.on("post_message")
def post_message(data: Any = None, token: Any = None) -> dict[str, Any]:
    """Any client with a valid token: post ``{source}``. Acks the message dict or an error.

    Alone, the message is inserted here. On the platform (``STRANGLER_LB_URL``
    set) it is posted through the load balancer to ``POST /api/messages``,
    so one endpoint family inserts messages whichever backend serves it.
    """
    from monolith.api.messages import post_message as create_message

    try:
        user = _authenticated(token)
        if not isinstance(data, dict):
            raise ValidationError("data must be an object with a source")
        if current_app.config.get("STRANGLER_LB_URL"):
            # end the transaction reading the user opened: on SQLite it holds the write
            # lock (BEGIN IMMEDIATE), and the backend serving the post may be this one
            db.session.rollback()
            return _post_through_lb(data, token)
        message = create_message(user, data)
    except (AuthError, ValidationError) as exc:
        db.session.rollback()
        return {"error": str(exc)}
    return message.to_dict()


def _post_through_lb(data: dict[str, Any], token: str) -> dict[str, Any]:
    """``POST /api/messages`` through the load balancer as the user; the created message or an error."""
    from router.lbclient import LBClient, ServiceUnavailable

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    client = app.extensions.get("lb")
    if client is None:  # one per app: its connection pool is reused
        client = app.extensions.setdefault("lb", LBClient(app.config["STRANGLER_LB_URL"]))
    try:
        response = client.post("/api/messages", json=data, service="messages",
                               headers={"Authorization": f"Bearer {token}"})
    except ServiceUnavailable as exc:
        return {"error": str(exc)}
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 201 and isinstance(body, dict):
        return body
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return {"error": body["error"]}
    logger.warning("POST /api/messages answered %s without a JSON error", response.status_code)
    return {"error": f"posting the message failed ({response.status_code}); try again"}


@socketio.on_error_default
def event_failed(error: Exception) -> dict[str, str]:
    """Any event whose handler raised: log it, roll back, and ack ``{"error": ...}``.

    The handlers answer bad tokens and data themselves; this is the net
    under them, so a client's callback always hears back (Flask-SocketIO
    sends this return value as the ack) instead of waiting on a dead handler.
    """
    logger.error("Socket.IO event %r failed", request.event.get("message"), exc_info=error)
    db.session.rollback()
    return {"error": "the server could not handle this event; try again"}


@socketio.on("disconnect")
def on_disconnect(reason: Any = None) -> None:
    """Mark the user of this socket offline, unless another of their sockets is still open."""
    user_id, still_connected = _forget(request.sid)
    if user_id is None or still_connected:
        return
    user = db.session.get(User, user_id)
    if user is not None and user.online:
        user.online = False
        db.session.commit()


def mark_inactive_users_offline(now: float | None = None) -> list[int]:
    """Mark users not seen for ``ONLINE_TIMEOUT`` seconds offline; return their ids.

    Needs an app context. Each change is committed and pushed to clients.
    """
    now = time.time() if now is None else now
    cutoff = now - current_app.config["ONLINE_TIMEOUT"]
    stale = db.session.scalars(
        select(User).where(User.online.is_(True), User.last_seen_at < cutoff)
    ).all()
    for user in stale:
        user.online = False
    db.session.commit()
    return [user.id for user in stale]


def start_offline_task(app: Flask) -> bool:
    """Start the offline sweep once per process; return whether this call started it.

    Setting ``app.extensions["offline_task_stop"]`` (a ``threading.Event``) ends it.
    """
    global _offline_task_started
    with _sids_lock:
        if _offline_task_started:
            return False
        _offline_task_started = True
    stop = app.extensions.setdefault("offline_task_stop", threading.Event())
    socketio.start_background_task(_offline_loop, app, stop)
    return True


def _offline_loop(app: Flask, stop: threading.Event) -> None:
    interval = app.config["OFFLINE_CHECK_INTERVAL"]
    while not stop.wait(interval):
        try:
            with app.app_context():
                mark_inactive_users_offline()
                store = app.extensions["revocation_store"]
                if hasattr(store, "prune"):  # the etcd store forgets by itself (leases)
                    store.prune()
        except Exception:  # a database hiccup must not end presence tracking for good
            logger.exception("marking inactive users offline failed; retrying in %ss", interval)
