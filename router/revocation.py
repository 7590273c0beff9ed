"""Token revocations kept in etcd, so every process of every service refuses the same tokens.

Implements ``monolith.revocation.RevocationStore``. Each revocation is one key
bound to a lease that outlives the tokens it refuses, so etcd forgets it on
its own once it no longer matters:

- ``strangler/revoked/jti/<jti>`` — one token, until its ``exp`` (+ leeway);
- ``strangler/revoked/user/<id>`` = ``at`` — every token of the user issued
  at or before ``at``, for one token lifetime (+ leeway). The lifetime is the
  ``max_token_ttl`` the store is built with: the backends pass their
  ``TOKEN_TTL``, which must be the same on every backend (``strangler up``
  gives them one environment).
"""

from __future__ import annotations

import math
import threading
import time
from urllib.parse import quote

from router.etcd import Compare, Etcd, Put

REVOKED_PREFIX = "strangler/revoked/"
# the monolith's default TOKEN_TTL; a backend with another TOKEN_TTL passes its own
MAX_TOKEN_TTL = 3600
# Services may accept a token slightly past exp (clock skew): keep its revocation that much longer.
DEFAULT_LEEWAY = 5


def jti_key(jti: str) -> str:
    """PURE: the key revoking token ``jti`` (percent-quoted, so any jti is one key segment)."""
    if not jti:
        raise ValueError("jti is empty; a token without a jti cannot be revoked")
    return f"{REVOKED_PREFIX}jti/{quote(jti, safe='')}"


def user_key(user_id: int) -> str:
    """PURE: the key holding the time before which ``user_id``'s tokens are refused."""
    return f"{REVOKED_PREFIX}user/{int(user_id)}"


def lease_ttl(expires_at: float, now: float, leeway: float = DEFAULT_LEEWAY) -> int:
    """PURE: whole seconds a revocation must live to outlast a token expiring at ``expires_at``.

    0 when the token (with leeway) has already expired: nothing to remember.
    """
    remaining = expires_at + leeway - now
    return max(0, math.ceil(remaining))


class EtcdRevocationStore:
    """Revocations in etcd under ``strangler/revoked/``; safe to share between threads.

    ``max_token_ttl`` is the longest lifetime (seconds) of a token the
    backends issue (their ``TOKEN_TTL``): a per-user revocation is kept that
    long, or a revoked token would turn valid again before it expires.

    ``cache_seconds`` (default 0: off) lets ``is_revoked``/``user_revoked_at``
    reuse an answer that long; keep it well under 1 s, since a token revoked by
    one process must be refused by every other within a second. A revocation
    made through this store clears its own cache at once. etcd errors
    (``router.etcd.EtcdUnavailable``) propagate: the caller decides how to fail.
    """

    def __init__(
        self,
        etcd: Etcd,
        *,
        max_token_ttl: int = MAX_TOKEN_TTL,
        leeway: float = DEFAULT_LEEWAY,
        cache_seconds: float = 0.0,
        clock=time.time,
    ) -> None:
        if max_token_ttl <= 0:
            raise ValueError(f"max_token_ttl={max_token_ttl} must be positive (the TOKEN_TTL in seconds)")
        if cache_seconds >= 1:
            raise ValueError(f"cache_seconds={cache_seconds} would let a revoked token through for a second or more")
        self.etcd = etcd
        self.max_token_ttl = max_token_ttl
        self.leeway = leeway
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def _read(self, key: str) -> str | None:
        if self.cache_seconds > 0:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
                return hit[1]
        value = self.etcd.get(key)
        if self.cache_seconds > 0:
            with self._lock:
                self._cache[key] = (time.monotonic(), value)
        return value

    def _forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def revoke(self, jti: str, expires_at: float) -> None:
        """Refuse token ``jti`` until it expires; an already expired token needs no entry."""
        key = jti_key(jti)
        ttl = lease_ttl(expires_at, self._clock(), self.leeway)
        if ttl > 0:
            current = self.etcd.get_entry(key)
            # A repeat revocation must not shorten the first one's lease.
            if current is None or float(current.value or 0) < expires_at:
                self.etcd.put(key, repr(float(expires_at)), lease=self.etcd.lease(ttl))
        self._forget(key)

    def is_revoked(self, jti: str) -> bool:
        """True when token ``jti`` was revoked (by any process)."""
        return self._read(jti_key(jti)) is not None

    def revoke_user(self, user_id: int, at: float) -> None:
        """Refuse every token of ``user_id`` issued at or before ``at`` (the latest ``at`` wins)."""
        key = user_key(user_id)
        ttl = lease_ttl(at + self.max_token_ttl, self._clock(), self.leeway)
        # Compare-and-swap so two concurrent revocations keep the later time.
        for _ in range(10):
            current = self.etcd.get_entry(key)
            if current is not None and float(current.value) >= at:
                break
            guard = Compare(key, current.mod_revision if current else 0)
            lease = self.etcd.lease(max(ttl, 1))
            if self.etcd.txn(compares=[guard], puts=[Put(key, repr(float(at)), lease)]):
                break
            lease.revoke()
        else:
            raise RuntimeError(f"could not record the revocation of user {user_id}: too much contention")
        self._forget(key)

    def user_revoked_at(self, user_id: int) -> float | None:
        """The latest ``at`` given to ``revoke_user`` for ``user_id`` that etcd still keeps, or None."""
        value = self._read(user_key(user_id))
        return None if value is None else float(value)
