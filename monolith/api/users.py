"""``/api/users``: register, list, show and edit users."""

from __future__ import annotations

import time

from flask import abort, current_app, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from monolith import db
from monolith.api import bp
from monolith.api.common import get_or_404, int_arg, json_object
from monolith.auth import token_auth, token_optional_auth
from monolith.models import User, ValidationError


def _nickname_taken(nickname: str, user_id: int | None = None) -> bool:
    query = select(User.id).where(User.nickname == nickname)
    if user_id is not None:
        query = query.where(User.id != user_id)
    with db.session.no_autoflush:  # the edited user is not written before we know
        return db.session.scalar(query) is not None


def _save_user(user: User) -> None:
    """Commit *user*, turning a nickname race lost to another request into a 400."""
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        abort(400, description="nickname is already taken")


@bp.post("/users")
def new_user():  # noqa: ANN201
    """Anyone may call this: register ``{nickname, password}``; 201 with the user and Location."""
    user = User()
    try:
        user.from_dict(json_object())
    except ValidationError as exc:
        abort(400, description=str(exc))
    if _nickname_taken(user.nickname):
        abort(400, description="nickname is already taken")
    _save_user(user)
    response = jsonify(user.to_dict())
    response.status_code = 201
    response.headers["Location"] = f"/api/users/{user.id}"
    return response


@bp.get("/users")
@token_optional_auth
def get_users():  # noqa: ANN201
    """Anyone may call this (a token is optional, a bad one is refused).

    Returns ``{"users": [...]}`` ordered by updated_at then nickname, filtered
    by ``?online=0|1`` and ``?updated_since=<epoch>`` (strictly greater).
    """
    query = select(User).order_by(User.updated_at, User.nickname)
    online = request.args.get("online")
    if online is not None:
        if online not in ("0", "1"):
            abort(400, description=f"online must be 0 or 1, not {online!r}")
        query = query.where(User.online == (online == "1"))
    since = int_arg("updated_since")
    if since is not None:
        query = query.where(User.updated_at > since)
    return jsonify({"users": [user.to_dict() for user in db.session.scalars(query)]})


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
    data = json_object()
    # end the read transaction: hashing a new password is slow on purpose and
    # must not hold the database (on SQLite, the write lock) meanwhile
    db.session.rollback()
    try:
        user.from_dict(data, partial=True)
    except ValidationError as exc:
        db.session.rollback()
        abort(400, description=str(exc))
    if "nickname" in data and _nickname_taken(user.nickname, user.id):
        db.session.rollback()
        abort(400, description="nickname is already taken")
    _save_user(user)
    if "password" in data:
        current_app.extensions["revocation_store"].revoke_user(user.id, time.time())
    return "", 204
