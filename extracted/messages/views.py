"""``/api/messages`` of the messages service: the monolith's contract, on its own table.

Tokens are verified locally (``extracted.common.auth``); a request with a
token then marks its user online through the users service
(``PUT /internal/users/<id>/seen``), as token use does in the monolith, once
per user and second (``last_seen_at`` counts seconds). Link
previews are added off the request path and pushed when done.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

from flask import Blueprint, Flask, abort, current_app, g, jsonify

from extracted.common.auth import mark_seen, token_auth, token_optional_auth
from extracted.messages.models import Message, db, save
from monolith.api import common
from monolith.api.common import created, json_object
from monolith.api.messages import listed_messages, set_source
from monolith.models import ValidationError
from monolith.tokens import user_id_of
from router.lbclient import ServiceUnavailable

bp = Blueprint("messages", __name__)
logger = logging.getLogger(__name__)


class SeenMarks:
    """Which wall-clock second each user was last marked seen in users, by this process.

    ``last_seen_at`` counts whole seconds, so a second call within the same
    second would write nothing new: a busy client pays the round trip to
    users once a second instead of on every request. Bounded: past
    ``limit`` users it starts afresh (costing at most one more call each).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._second: dict[int, int] = {}
        self._lock = threading.Lock()

    def due(self, user_id: int, second: int) -> bool:
        """Whether *user_id* still needs marking in *second*."""
        with self._lock:
            return self._second.get(user_id) != second

    def done(self, user_id: int, second: int) -> None:
        """Record that users marked *user_id* seen in *second*."""
        with self._lock:
            if len(self._second) >= self.limit:
                self._second.clear()
            self._second[user_id] = second


def mark_seen_if_up(claims: dict[str, Any]) -> None:
    """The ``token_hook``: mark the token's user online in users, if users answers.

    Once per user and second (:class:`SeenMarks`): the first request of a
    second calls users, the others that second go on without waiting. A user
    the users service does not know is refused (401) as in the monolith (a
    user is remembered only once users accepted them). If users is down the
    request goes on: the token was verified here, presence is refreshed by
    the next ping, and reading or posting messages should not depend on the
    users service.
    """
    marks = current_app.extensions["seen_marks"]
    user_id, second = user_id_of(claims), int(time.time())
    if not marks.due(user_id, second):
        return
    try:
        mark_seen(claims)
    except ServiceUnavailable as exc:
        logger.warning("user %s not marked seen: %s", claims.get("sub"), exc)
        return
    marks.done(user_id, second)


def get_or_404(id: int) -> Message:
    """Return message *id*, or abort with the monolith's 404."""
    return common.get_or_404(Message, id, db.session)


def _store_expansion(app: Flask, message_id: int, source: str, expanded_html: str) -> None:
    # runs on an expander thread: the message may have been edited meanwhile,
    # and then that edit's own expansion wins
    with app.app_context():
        row = db.session.get(Message, message_id)
        if row is not None and row.source == source and row.html != expanded_html:
            row.html = expanded_html
            save(row)


def expand_links_later(message: Message) -> None:
    """Expand *message*'s links in the background, then store and push the result."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    on_done = functools.partial(_store_expansion, app, message.id, message.source)
    app.extensions["link_expander"].submit(message.html, on_done)


@bp.post("/messages")
@token_auth
def new_message():  # noqa: ANN201
    """Any user with a valid token: post ``{source}``; 201 with the message and Location."""
    message = Message(user_id=g.user_id)
    try:
        set_source(message, json_object())
    except ValidationError as exc:
        abort(400, description=str(exc))
    response = created(save(message), f"/api/messages/{message.id}")
    expand_links_later(message)
    return response


@bp.get("/messages")
@token_optional_auth
def get_messages():  # noqa: ANN201
    """Anyone may call this (a token is optional, a bad one is refused).

    Returns ``{"messages": [...]}`` updated in the last 24 hours, ordered by
    updated_at then id; ``?updated_since=<epoch>`` (strictly greater) and
    ``?user_id=`` narrow it.
    """
    return jsonify({"messages": listed_messages(db.session, Message)})


@bp.get("/messages/<int:id>")
@token_optional_auth
def get_message(id: int):  # noqa: ANN201
    """Anyone may call this (a token is optional). Returns the message, or 404."""
    return jsonify(get_or_404(id).to_dict())


@bp.put("/messages/<int:id>")
@token_auth
def edit_message(id: int):  # noqa: ANN201
    """Only the message's author, with a valid token: replace its ``{source}``; 204."""
    message = get_or_404(id)
    if message.user_id != g.user_id:
        abort(403, description="you can only edit your own messages")
    try:
        changed = set_source(message, json_object())
    except ValidationError as exc:
        db.session.rollback()
        abort(400, description=str(exc))
    if changed:
        save(message)
        expand_links_later(message)
    return "", 204
