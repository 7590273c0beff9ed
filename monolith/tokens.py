"""JWT issue and verification, free of Flask so extracted services can reuse it.

Tokens are HS256 JWTs signed with the shared ``JWT_SECRET_KEY``. ``iat`` is a
float with sub-second precision: a password change revokes every token issued
at or before that instant, and a login a moment later in the same second must
still get a token that is accepted.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "nickname", "jti", "iat", "exp")


class InvalidToken(Exception):
    """The token is malformed, badly signed, expired or missing a claim."""


def issue_token(
    user_id: int, nickname: str, secret: str, ttl: float = 3600, now: float | None = None
) -> str:
    """Return a signed token for the user, valid for *ttl* seconds from *now*."""
    issued_at = time.time() if now is None else now
    claims = {
        "sub": str(user_id),
        "nickname": nickname,
        "jti": uuid.uuid4().hex,
        "iat": issued_at,
        "exp": issued_at + ttl,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(token: str, secret: str) -> dict[str, Any]:
    """Return the verified claims of *token*, or raise :class:`InvalidToken`.

    Checks the signature, the expiry and that every claim is present and of
    the right type; revocation is the caller's job (see ``revocation.py``).
    """
    if not isinstance(token, str) or not token:
        raise InvalidToken("token must be a non-empty string")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": list(REQUIRED_CLAIMS), "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if not str(claims["sub"]).isdigit() or not isinstance(claims["jti"], str):
        raise InvalidToken("token has a malformed sub or jti claim")
    if not isinstance(claims["iat"], int | float) or isinstance(claims["iat"], bool):
        raise InvalidToken("token has a malformed iat claim")
    return claims


def user_id_of(claims: dict[str, Any]) -> int:
    """Return the user id a verified token speaks for."""
    return int(claims["sub"])
