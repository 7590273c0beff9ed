"""Where revoked tokens are remembered: one small interface, two stores.

The monolith alone uses :class:`DatabaseRevocationStore`; on the platform an
etcd-backed store (``router/revocation.py``) with the same methods is put in
``app.extensions["revocation_store"]`` so every service honours one list.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from sqlalchemy import delete, select

from monolith import db
from monolith.models import RevokedToken

USER_KEY_PREFIX = "user:"


@runtime_checkable
class RevocationStore(Protocol):
    """The methods a revocation store offers."""

    def revoke(self, jti: str, expires_at: float) -> None:
        """Refuse the token *jti* from now on; it can be forgotten after *expires_at*."""

    def is_revoked(self, jti: str) -> bool:
        """Tell whether the token *jti* was revoked."""

    def revoke_user(self, user_id: int, at: float) -> None:
        """Refuse every token of *user_id* issued at or before *at*."""

    def user_revoked_at(self, user_id: int) -> float | None:
        """Return the latest *at* given to :meth:`revoke_user` for the user, if any."""


def is_token_revoked(store: RevocationStore, claims: dict) -> bool:
    """Tell whether a verified token's claims are refused by *store*.

    A store with ``refuses(claims)`` answers the whole question itself (the
    database store in one query instead of two).
    """
    refuses = getattr(store, "refuses", None)
    if refuses is not None:
        return refuses(claims)
    if store.is_revoked(claims["jti"]):
        return True
    revoked_at = store.user_revoked_at(int(claims["sub"]))
    return revoked_at is not None and float(claims["iat"]) <= revoked_at


class DatabaseRevocationStore:
    """Revocations kept in the monolith's own ``revoked_tokens`` table.

    Needs an app context. A per-user revocation is a row keyed ``user:<id>``
    that lives one token lifetime (*token_ttl*), after which no token it
    could refuse is still valid anyway.
    """

    def __init__(self, token_ttl: float = 3600) -> None:
        self.token_ttl = token_ttl

    def revoke(self, jti: str, expires_at: float) -> None:
        """Refuse the token *jti*; see :class:`RevocationStore`."""
        row = db.session.get(RevokedToken, jti)
        if row is None:
            db.session.add(RevokedToken(jti=jti, expires_at=expires_at))
        else:
            row.expires_at = max(row.expires_at, expires_at)
        db.session.commit()

    def is_revoked(self, jti: str) -> bool:
        """See :class:`RevocationStore`."""
        return db.session.get(RevokedToken, jti) is not None

    def revoke_user(self, user_id: int, at: float) -> None:
        """See :class:`RevocationStore`."""
        key = f"{USER_KEY_PREFIX}{user_id}"
        row = db.session.get(RevokedToken, key)
        if row is None:
            db.session.add(RevokedToken(jti=key, revoked_at=at, expires_at=at + self.token_ttl))
        elif row.revoked_at is None or row.revoked_at < at:
            row.revoked_at = at
            row.expires_at = at + self.token_ttl
        db.session.commit()

    def user_revoked_at(self, user_id: int) -> float | None:
        """See :class:`RevocationStore`."""
        row = db.session.get(RevokedToken, f"{USER_KEY_PREFIX}{user_id}")
        return None if row is None else row.revoked_at

    def refuses(self, claims: dict) -> bool:
        """:func:`is_token_revoked` in one query: the token's row and its user's, if any."""
        user_key = f"{USER_KEY_PREFIX}{int(claims['sub'])}"
        rows = db.session.execute(select(RevokedToken.jti, RevokedToken.revoked_at)
                                  .where(RevokedToken.jti.in_([claims["jti"], user_key]))).all()
        found = dict(rows)
        if claims["jti"] in found:
            return True
        revoked_at = found.get(user_key)
        return revoked_at is not None and float(claims["iat"]) <= revoked_at

    def prune(self, now: float | None = None) -> int:
        """Delete revocations whose tokens have expired; return how many went."""
        cutoff = time.time() if now is None else now
        result = db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < cutoff))
        db.session.commit()
        return result.rowcount

    def count(self) -> int:
        """Return how many revocations are stored (for tests and diagnostics)."""
        return len(db.session.scalars(select(RevokedToken.jti)).all())
