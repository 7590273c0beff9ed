"""``/api/tokens``: log in for a token, and revoke it."""

from __future__ import annotations

from flask import current_app, g, jsonify

from monolith.api import bp
from monolith.auth import basic_auth, token_auth
from monolith.tokens import issue_token


@bp.post("/tokens")
@basic_auth
def new_token():  # noqa: ANN201
    """Any registered user, with HTTP basic nickname:password. Returns ``{"token": ...}``."""
    user = g.current_user
    token = issue_token(
        user.id, user.nickname, current_app.config["JWT_SECRET_KEY"], current_app.config["TOKEN_TTL"]
    )
    return jsonify({"token": token})


@bp.delete("/tokens")
@token_auth
def revoke_token():  # noqa: ANN201
    """Any user with a valid token: revoke that token (it is refused from then on); 204."""
    claims = g.token_claims
    current_app.extensions["revocation_store"].revoke(claims["jti"], float(claims["exp"]))
    return "", 204
