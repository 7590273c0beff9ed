"""The users service's endpoints: ``/api/users`` (the contract) and ``/internal/users`` (services).

The public views answer exactly as the monolith's; the internal ones are for
other services, called through the load balancer (``tokens`` checks
passwords, ``messages`` and ``socketio`` report presence).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, current_app, g, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash

from extracted.common.auth import AuthError, token_auth, token_optional_auth
from extracted.users.models import User, ValidationError, db
from monolith.api.common import MAX_ID, int_arg, json_object

api = Blueprint("users_api", __name__)
internal = Blueprint("users_internal", __name__)


def get_user_or_404(id: int) -> User:
    """Return user *id*, or abort with the monolith's 404."""
    user = db.session.get(User, id) if 0 < id <= MAX_ID else None
    if user is None:
        abort(404, description=f"user {id} not found")
    return user


def ping_token_user(claims: dict[str, Any]) -> None:
    """The ``token_hook``: a token of a user that does not exist is refused; the user is now online."""
    user = db.session.get(User, int(claims["sub"]))
    if user is None:
        raise AuthError("token names a user that does not exist")
    user.ping()
    db.session.commit()


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


@api.post("/api/users")
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


@api.get("/api/users")
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


@api.get("/api/users/<int:id>")
@token_optional_auth
def get_user(id: int):  # noqa: ANN201
    """Anyone may call this (a token is optional). Returns the user, or 404."""
    return jsonify(get_user_or_404(id).to_dict())


@api.put("/api/users/<int:id>")
@token_auth
def edit_user(id: int):  # noqa: ANN201
    """Only the user themself, with a valid token: change nickname and/or password; 204.

    A password change revokes every token of the user issued until now, in
    the shared revocation store (so every service refuses them).
    """
    user = get_user_or_404(id)
    if user.id != g.user_id:
        abort(403, description="you can only edit your own user")
    data = json_object()
    db.session.rollback()  # don't hold the database while the new password hashes
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


@internal.post("/internal/users/authenticate")
def authenticate():  # noqa: ANN201
    """Other services only (``tokens``): check ``{nickname, password}``.

    200 with the user (now online, seen now), 401 ``{"error"}`` when the
    nickname or password is wrong, 400 for a malformed body.
    """
    data = json_object()
    nickname, password = data.get("nickname"), data.get("password")
    if not isinstance(nickname, str) or not isinstance(password, str):
        abort(400, description="nickname and password must be strings")
    user = db.session.scalar(select(User).where(User.nickname == nickname)) if nickname else None
    password_hash = user.password_hash if user is not None else None
    db.session.rollback()  # hashing is slow on purpose: don't hold the write lock meanwhile
    if password_hash is None or not check_password_hash(password_hash, password):
        return jsonify({"error": "wrong nickname or password"}), 401
    user.ping()
    db.session.commit()
    return jsonify(user.to_dict())


@internal.put("/internal/users/<int:id>/seen")
def user_seen(id: int):  # noqa: ANN201
    """Other services only (a token was used, a socket pinged): user *id* is online now; 204 / 404."""
    get_user_or_404(id).ping()
    db.session.commit()
    return "", 204


@internal.put("/internal/users/<int:id>/offline")
def user_offline(id: int):  # noqa: ANN201
    """Other services only (``socketio``, on the user's last disconnect): user *id* is offline; 204 / 404."""
    user = get_user_or_404(id)
    if user.online:
        user.online = False
        db.session.commit()
    return "", 204
