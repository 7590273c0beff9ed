"""JWT issue and verification, free of Flask so extracted services can reuse it.

Tokens are HS256 JWTs signed with the shared ``JWT_SECRET_KEY``. ``iat`` is a
float with sub-second precision: a password change revokes every token issued
at or before that instant, and a login a moment later in the same second must
still get a token that is accepted.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from typing import Any

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "nickname", "jti", "iat", "exp")
# the largest id any supported engine's INTEGER column can hold; a bigger id
# would overflow the driver instead of simply not existing
MAX_ID = 2**31 - 1
# a user id as a token's sub: ASCII digits only (str.isdigit() also takes "²")
_USER_ID = re.compile(r"[1-9][0-9]{0,9}")
# revoked_tokens.jti is VARCHAR(64)
JTI_MAX = 64


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
    if not token.isascii():  # a JWT is base64url and dots; this also keeps out lone surrogates
        raise InvalidToken("token must be ASCII text")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": list(REQUIRED_CLAIMS), "verify_iat": False},
        )
    except (jwt.PyJWTError, OverflowError) as exc:  # OverflowError: an infinite exp
        raise InvalidToken(str(exc)) from exc
    if not is_user_id(claims["sub"]):
        raise InvalidToken("token has a malformed sub claim")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 0 < len(jti) <= JTI_MAX:
        raise InvalidToken("token has a malformed jti claim")
    for name in ("iat", "exp"):
        value = claims[name]
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InvalidToken(f"token has a malformed {name} claim")
    return claims


def is_user_id(sub: Any) -> bool:
    """PURE: tell whether a token's *sub* names a user id a database can hold (1 to MAX_ID)."""
    return isinstance(sub, str) and _USER_ID.fullmatch(sub) is not None and int(sub) <= MAX_ID


def user_id_of(claims: dict[str, Any]) -> int:
    """Return the user id a verified token speaks for."""
    return int(claims["sub"])
