"""``/api/users``: register, list, show and edit users.

The helpers above the views take the user model and the session as
parameters, so the users service answers with the same code on its own table.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Response, abort, current_app, g, jsonify
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError

from monolith import db
from monolith.api import bp
from monolith.api.common import bool_arg, created, get_or_404, int_arg, json_object
from monolith.auth import token_auth, token_optional_auth
from monolith.models import User, ValidationError


def nickname_taken(session: Any, model: Any, nickname: str, user_id: int | None = None) -> bool:
    """Tell whether another user of *model* than *user_id* already has *nickname*."""
    query = select(model.id).where(model.nickname == nickname)
    if user_id is not None:
        query = query.where(model.id != user_id)
    with session.no_autoflush:  # the edited user is not written before we know
        return session.scalar(query) is not None


def save_user(session: Any, user: Any) -> None:
    """Commit *user*, turning a nickname race lost to another request into a 400."""
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        abort(400, description="nickname is already taken")


def register_user(session: Any, model: Any) -> Response:
    """Create a *model* user from the request's JSON body; the 201 answer, or abort with 400."""
    user = model()
    try:
        user.from_dict(json_object())
    except ValidationError as exc:
        abort(400, description=str(exc))
    if nickname_taken(session, model, user.nickname):
        abort(400, description="nickname is already taken")
    save_user(session, user)
    return created(user.to_dict(), f"/api/users/{user.id}")


def users_query(model: Any) -> Select:
    """Return the users listing of *model*, filtered by the request's ``?online`` and ``?updated_since``.

    Ordered by updated_at then nickname; aborts with 400 on a malformed filter.
    """
    query = select(model).order_by(model.updated_at, model.nickname)
    online = bool_arg("online")
    if online is not None:
        query = query.where(model.online == online)
    since = int_arg("updated_since")
    if since is not None:
        query = query.where(model.updated_at > since)
    return query


def update_user(session: Any, user: Any, data: dict[str, Any]) -> None:
    """Apply the edit *data* to *user* and commit, or abort with 400.

    A password change revokes every token of the user issued until now.
    """
    # end the read transaction: hashing a new password is slow on purpose and
    # must not hold the database (on SQLite, the write lock) meanwhile
    session.rollback()
    try:
        user.from_dict(data, partial=True)
    except ValidationError as exc:
        session.rollback()
        abort(400, description=str(exc))
    if "nickname" in data and nickname_taken(session, type(user), user.nickname, user.id):
        session.rollback()
        abort(400, description="nickname is already taken")
    save_user(session, user)
    if "password" in data:
        current_app.extensions["revocation_store"].revoke_user(user.id, time.time())


@bp.post("/users")
def new_user():  # noqa: ANN201
    """Anyone may call this: register ``{nickname, password}``; 201 with the user and Location."""
    return register_user(db.session, User)


@bp.get("/users")
@token_optional_auth
def get_users():  # noqa: ANN201
    """Anyone may call this (a token is optional, a bad one is refused).

    Returns ``{"users": [...]}`` ordered by updated_at then nickname, filtered
    by ``?online=0|1`` and ``?updated_since=<epoch>`` (strictly greater).
    """
    return jsonify({"users": [user.to_dict() for user in db.session.scalars(users_query(User))]})


@bp.get("/users/<int:id>")
@token_optional_auth
def get_user(id: int):  # noqa: ANN201
    """Anyone may call this (a token is optional). Returns the user, or 404."""
    return jsonify(get_or_404(User, id).to_dict())


@bp.put("/users/<int:id>")
@token_auth
def edit_user(id: int):  # noqa: ANN201
    """Only the user themself, with a valid token: change nickname and/or password; 204.

    A password change revokes every token of the user issued until now.
    """
    user = get_or_404(User, id)
    if user.id != g.current_user.id:
        abort(403, description="you can only edit your own user")
    update_user(db.session, user, json_object())
    return "", 204
