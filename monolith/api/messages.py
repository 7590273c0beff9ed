"""``/api/messages``: post, list, show and edit chat messages.

A message's ``html`` is rendered from its markdown ``source`` at once; link
previews are added later by the link expander, off the request path, and the
expanded message is pushed to clients like any other change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, abort, current_app, g, jsonify
from sqlalchemy import Select, select

from monolith import db
from monolith.api import bp
from monolith.api.common import created, get_or_404, int_arg, json_object
from monolith.auth import token_auth, token_optional_auth
from monolith.models import Message, User, ValidationError, message_dict, timestamp
from monolith.render import render_html

logger = logging.getLogger(__name__)

# messages older than this are history and not listed
LISTING_WINDOW = 24 * 60 * 60


def set_source(message: Message, data: Mapping[str, Any]) -> bool:
    """Set *message*'s source and rendered html from client *data*; raise ValidationError.

    Returns whether the source changed; an unchanged one keeps its html (and
    the link previews already in it).
    """
    before = message.source
    message.from_dict(data)
    if message.source == before and message.html is not None:
        return False
    message.html = render_html(message.source)
    return True


def messages_query(model: Any) -> Select:
    """Return the messages listing of *model* for the request's ``?updated_since`` and ``?user_id``.

    Only messages updated in the last :data:`LISTING_WINDOW` seconds, ordered
    by updated_at then id; aborts with 400 on a malformed filter.
    """
    since = max(int_arg("updated_since") or 0, timestamp() - LISTING_WINDOW)
    query = select(model).where(model.updated_at > since)
    user_id = int_arg("user_id")
    if user_id is not None:
        query = query.where(model.user_id == user_id)
    return query.order_by(model.updated_at, model.id)


def listed_messages(session: Any, model: Any) -> list[dict[str, Any]]:
    """The listing (:func:`messages_query`) of *model* as public dicts.

    Read as plain rows of the table's columns, not ORM objects: building
    200 tracked objects per request cost more than the query itself.
    """
    rows = session.execute(messages_query(model).with_only_columns(*model.__table__.columns))
    return [message_dict(row) for row in rows]


def post_message(user: User, data: Mapping[str, Any]) -> Message:
    """Create and commit a message of *user* from *data*, then schedule its link expansion."""
    message = Message(user_id=user.id)
    set_source(message, data)
    db.session.add(message)
    db.session.commit()
    expand_links_later(message)
    return message


def expand_links_later(message: Message) -> None:
    """Expand the links of *message* in the background and store the result.

    The result is dropped if the message's source changed meanwhile (an edit
    schedules its own expansion).
    """
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    message_id, source = message.id, message.source

    def store(expanded_html: str) -> None:
        with app.app_context():
            row = db.session.get(Message, message_id)
            if row is None or row.source != source or row.html == expanded_html:
                return
            row.html = expanded_html
            db.session.commit()

    app.extensions["link_expander"].submit(message.html, store)


@bp.post("/messages")
@token_auth
def new_message():  # noqa: ANN201
    """Any user with a valid token: post ``{source}``; 201 with the message and Location."""
    try:
        message = post_message(g.current_user, json_object())
    except ValidationError as exc:
        abort(400, description=str(exc))
    return created(message.to_dict(), f"/api/messages/{message.id}")


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
    return jsonify(get_or_404(Message, id).to_dict())


@bp.put("/messages/<int:id>")
@token_auth
def edit_message(id: int):  # noqa: ANN201
    """Only the message's author, with a valid token: replace its ``{source}``; 204."""
    message = get_or_404(Message, id)
    if message.user_id != g.current_user.id:
        abort(403, description="you can only edit your own messages")
    try:
        changed = set_source(message, json_object())
    except ValidationError as exc:
        db.session.rollback()
        abort(400, description=str(exc))
    db.session.commit()
    if changed:
        expand_links_later(message)
    return "", 204
