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

When etcd is wholly down, the rule (docs/security.md) is: **reads fail open
on a recent snapshot, writes fail closed.** The store keeps a snapshot of
every revocation, refreshed at most every ``snapshot_every`` seconds while
etcd answers; for ``stale_for`` seconds after the last refresh, a check the
caller marks as a read (``stale_ok``) is answered from it, and every other
check raises ``EtcdUnavailable`` (the apps answer 503).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from router.etcd import Compare, Etcd, EtcdUnavailable, Put
from router.keys import SAFE

REVOKED_PREFIX = "strangler/revoked/"
# the monolith's default TOKEN_TTL; a backend with another TOKEN_TTL passes its own
MAX_TOKEN_TTL = 3600
# Services may accept a token slightly past exp (clock skew): keep its revocation that much longer.
DEFAULT_LEEWAY = 5
# How long reads may be checked against the last snapshot while etcd is down, and how
# often the snapshot is refreshed while it is up (its staleness at the moment etcd goes).
STALE_FOR = 60.0
SNAPSHOT_EVERY = 2.0


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
        stale_for: float = 0.0,
        snapshot_every: float = SNAPSHOT_EVERY,
        stale_ok: Callable[[], bool] = lambda: False,
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
        self.stale_for = stale_for
        self.snapshot_every = snapshot_every
        self.stale_ok = stale_ok
        self._snapshot: dict[str, str] | None = None
        self._snapshot_at = -math.inf

    def _read(self, key: str) -> str | None:
        if self.cache_seconds > 0:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.cache_seconds:
                return hit[1]
        try:
            value = self.etcd.get(key)
        except EtcdUnavailable as exc:
            return self._from_snapshot(key, exc)
        self._refresh_snapshot()
        if self.cache_seconds > 0:
            with self._lock:
                self._cache[key] = (time.monotonic(), value)
        return value

    def _refresh_snapshot(self) -> None:
        if self.stale_for <= 0 or time.monotonic() - self._snapshot_at < self.snapshot_every:
            return
        began = time.monotonic()  # the snapshot is as old as the moment its read began
        try:
            values, _ = self.etcd.get_prefix(REVOKED_PREFIX)
        except EtcdUnavailable:
            return
        with self._lock:
            self._snapshot, self._snapshot_at = values, began

    def _from_snapshot(self, key: str, unavailable: EtcdUnavailable) -> str | None:
        """``key``'s value in the snapshot, if this check may be answered from it; else raise."""
        with self._lock:
            snapshot, age = self._snapshot, time.monotonic() - self._snapshot_at
        if snapshot is None or age > self.stale_for or not self.stale_ok():
            raise unavailable
        return snapshot.get(key)

    def _remember(self, key: str, value: str) -> None:
        # a revocation made here is in this process's snapshot at once
        with self._lock:
            if self._snapshot is not None:
                self._snapshot[key] = value

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
                self._remember(key, repr(float(expires_at)))
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
                self._remember(key, repr(float(at)))
                break
            lease.revoke()
        else:
            raise RuntimeError(f"could not record the revocation of user {user_id}: too much contention")
        self._forget(key)

    def user_revoked_at(self, user_id: int) -> float | None:
        """The latest ``at`` given to ``revoke_user`` for ``user_id`` that etcd still keeps, or None."""
        value = self._read(user_key(user_id))
        return None if value is None else float(value)


def platform_store(etcd_url: str, token_ttl: float) -> EtcdRevocationStore:
    """The store a backend on the platform uses: reads fail open on a snapshot while etcd is down.

    Waits a little for etcd (a worker may boot while a just-started etcd
    settles); a user's revocation outlives the longest token it refuses
    (``token_ttl``, the backends' shared TOKEN_TTL).
    """
    return EtcdRevocationStore(Etcd.connect(etcd_url, wait=10), max_token_ttl=math.ceil(token_ttl),
                               stale_for=STALE_FOR, stale_ok=_a_read)


def _a_read() -> bool:
    from flask import has_request_context, request

    return has_request_context() and request.method in SAFE
