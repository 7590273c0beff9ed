"""The tokens service's endpoints: ``POST /api/tokens`` (log in) and ``DELETE /api/tokens`` (log out).

It has no database: passwords are checked by ``users`` through the load
balancer (``POST /internal/users/authenticate``), tokens are JWTs signed with
the shared ``JWT_SECRET_KEY``, and revocations go to the shared store (etcd).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, g, jsonify

from extracted.common.auth import AuthError, mark_seen, token_auth
from monolith.auth import BASIC_CHALLENGE, auth_error_response, basic_credentials
from monolith.tokens import issue_token
from router.lbclient import ServiceUnavailable

logger = logging.getLogger(__name__)
bp = Blueprint("tokens_api", __name__)


def _wrong_credentials():  # noqa: ANN202 (a Flask response)
    return auth_error_response(AuthError("wrong nickname or password", challenge=BASIC_CHALLENGE))


def authenticate(nickname: str, password: str) -> dict[str, Any] | None:
    """Ask users whether *nickname*/*password* is right: the user dict, or None.

    Raises ``ServiceUnavailable`` when users cannot answer.
    """
    response = current_app.extensions["lb"].post(
        "/internal/users/authenticate", json={"nickname": nickname, "password": password},
        service="users",
    )
    if response.status_code == 200:
        return response.json()
    if response.status_code in (400, 401):
        # 400: credentials no user can have (a NUL in the nickname): wrong, like any other
        return None
    # users answers 200, 400 or 401 here; anything else (a 404 from a misrouted
    # path, a 500) means users could not check the password
    raise ServiceUnavailable(
        f"users is unavailable: POST /internal/users/authenticate answered {response.status_code}"
    )


@bp.post("/api/tokens")
def new_token():  # noqa: ANN201
    """Any registered user, with HTTP basic nickname:password. Returns ``{"token": ...}``.

    Wrong credentials: 401 with ``WWW-Authenticate: Basic ...``; users down: 503.
    """
    credentials = basic_credentials()
    if credentials is None or not credentials.username:
        return _wrong_credentials()
    user = authenticate(credentials.username, credentials.password or "")
    if user is None:
        return _wrong_credentials()
    token = issue_token(
        user["id"], user["nickname"], current_app.config["JWT_SECRET_KEY"],
        current_app.config["TOKEN_TTL"],
    )
    return jsonify({"token": token})


@bp.delete("/api/tokens")
@token_auth
def revoke_token():  # noqa: ANN201
    """Any user with a valid token: revoke that token (refused everywhere from then on); 204."""
    claims = g.claims
    current_app.extensions["revocation_store"].revoke(claims["jti"], float(claims["exp"]))
    return "", 204


def seen_if_users_answers(claims: dict[str, Any]) -> None:
    """The ``token_hook``: mark the user seen, as using a token does in the monolith.

    A token naming an unknown user is refused; users being down does not stop
    a log-out, since revoking the token matters more than presence.
    """
    try:
        mark_seen(claims)
    except ServiceUnavailable as exc:
        logger.warning("token used while users is down; presence not updated: %s", exc)
