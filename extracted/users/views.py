"""The users service's endpoints: ``/api/users`` (the contract) and ``/internal/users`` (services).

The public views answer exactly as the monolith's; the internal ones are for
other services, called through the load balancer (``tokens`` checks
passwords, ``messages`` and ``socketio`` report presence).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, jsonify
from sqlalchemy import select
from werkzeug.security import check_password_hash

from extracted.common.auth import AuthError, token_auth, token_optional_auth
from extracted.users.models import User, db
from monolith.api.common import get_or_404, json_object
from monolith.api.users import register_user, update_user, users_query

api = Blueprint("users_api", __name__)
internal = Blueprint("users_internal", __name__)


def get_user_or_404(id: int) -> User:
    """Return user *id*, or abort with the monolith's 404."""
    return get_or_404(User, id, db.session)


def ping_token_user(claims: dict[str, Any]) -> None:
    """The ``token_hook``: a token of a user that does not exist is refused; the user is now online."""
    user = db.session.get(User, int(claims["sub"]))
    if user is None:
        raise AuthError("token names a user that does not exist")
    user.ping()
    db.session.commit()


@api.post("/api/users")
def new_user():  # noqa: ANN201
    """Anyone may call this: register ``{nickname, password}``; 201 with the user and Location."""
    return register_user(db.session, User)


@api.get("/api/users")
@token_optional_auth
def get_users():  # noqa: ANN201
    """Anyone may call this (a token is optional, a bad one is refused).

    Returns ``{"users": [...]}`` ordered by updated_at then nickname, filtered
    by ``?online=0|1`` and ``?updated_since=<epoch>`` (strictly greater).
    """
    return jsonify({"users": [user.to_dict() for user in db.session.scalars(users_query(User))]})


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
    update_user(db.session, user, json_object())
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
