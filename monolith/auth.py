"""Who is calling: HTTP basic auth (to get a token) and bearer-token auth.

A successful login or token use marks the user online and seen now. Every
failure is a 401 with a JSON ``{"error": ...}`` body and the matching
``WWW-Authenticate`` challenge.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.security import check_password_hash

from monolith import db
from monolith.db import writing
from monolith.models import User
from monolith.revocation import is_token_revoked
from monolith.tokens import InvalidToken, decode_token, user_id_of
from router.etcd import EtcdError

BEARER_CHALLENGE = 'Bearer realm="Authentication Required"'
BASIC_CHALLENGE = 'Basic realm="Authentication Required"'

View = TypeVar("View", bound=Callable[..., Any])


class AuthError(Exception):
    """Authentication failed; carries the challenge to send back."""

    def __init__(self, message: str, challenge: str = BEARER_CHALLENGE) -> None:
        super().__init__(message)
        self.challenge = challenge


def auth_error_response(error: AuthError):  # noqa: ANN201 (a Flask response)
    """Return the 401 JSON response for *error*."""
    response = jsonify({"error": str(error)})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = error.challenge
    return response


def user_from_token(token: Any) -> tuple[User, dict[str, Any]]:
    """Return the user and claims of a valid, unrevoked *token*; raise :class:`AuthError`."""
    try:
        claims = decode_token(token, current_app.config["JWT_SECRET_KEY"])
    except InvalidToken as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    try:
        revoked = is_token_revoked(current_app.extensions["revocation_store"], claims)
    except EtcdError as exc:  # the platform's store, with etcd gone and no snapshot to read
        raise ServiceUnavailable(f"token revocations cannot be checked: {exc}") from exc
    if revoked:
        raise AuthError("token has been revoked")
    user = db.session.get(User, user_id_of(claims))
    if user is None:
        raise AuthError("token names a user that does not exist")
    return user, claims


def basic_credentials() -> Any:
    """The request's HTTP basic credentials (werkzeug's ``Authorization``), or None.

    None also when the header is malformed: werkzeug raises ValueError for
    non-ASCII base64 (``Basic é``) instead of ignoring it as it does other
    garbage, and a wrong header is a 401, never a crash.
    """
    try:
        credentials = request.authorization
    except ValueError:
        return None
    return credentials if credentials is not None and credentials.type == "basic" else None


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("send the token as 'Authorization: Bearer <token>'")
    return token.strip()


def _authenticate_token(required: bool) -> None:
    token = _bearer_token()
    if token is None:
        if required:
            raise AuthError("a token is required; get one with POST /api/tokens")
        g.current_user, g.token_claims = None, None
        return
    user, g.token_claims = user_from_token(token)
    g.current_user = mark_seen(user)


def mark_seen(user: User) -> User:
    """Mark *user* online and seen now, in a write transaction of its own when that changes anything.

    Nothing is written when they were marked this second already, so a busy
    client's reads stay reads. Returns the user (re-read by the write).
    """
    if not user.needs_ping():
        return user
    with writing():
        user = db.session.get(User, user.id)
        if user is None:
            raise AuthError("token names a user that does not exist")
        user.ping()
        db.session.commit()
    return user


def token_auth(view: View) -> View:
    """Require a valid bearer token; sets ``g.current_user`` and ``g.token_claims``."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _authenticate_token(required=True)
        except AuthError as exc:
            return auth_error_response(exc)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def token_optional_auth(view: View) -> View:
    """Accept a request without a token, but refuse a bad one (``g.current_user`` may be None)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _authenticate_token(required=False)
        except AuthError as exc:
            return auth_error_response(exc)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def basic_auth(view: View) -> View:
    """Require HTTP basic auth with nickname and password; sets ``g.current_user``."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        credentials = basic_credentials()
        user = None
        if credentials is not None and credentials.username:
            user = db.session.scalar(select(User).where(User.nickname == credentials.username))
        password_hash = user.password_hash if user is not None else None
        # hashing is slow on purpose: don't hold the transaction (on SQLite, the
        # write lock every request waits for) while it runs
        db.session.rollback()
        if password_hash is None or not check_password_hash(password_hash, credentials.password or ""):
            return auth_error_response(
                AuthError("wrong nickname or password", challenge=BASIC_CHALLENGE)
            )
        g.current_user = user
        user.ping()
        db.session.commit()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
