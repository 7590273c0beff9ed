"""router.revocation (the etcd revocation store): exact keys and lease sizes, and revocations in a real etcd.

Named test_etcd_revocation.py, not test_revocation.py: tests/monolith/test_revocation.py
holds that basename and pytest's default import mode needs unique basenames.
"""

from __future__ import annotations

import time
import uuid

import pytest

from router.revocation import EtcdRevocationStore, jti_key, lease_ttl, user_key
from strangler.stack import procs


def test_keys_are_exact():
    assert jti_key("3f2a9c") == "strangler/revoked/jti/3f2a9c"
    assert user_key(42) == "strangler/revoked/user/42"


def test_an_odd_jti_stays_one_key_segment():
    assert jti_key("a/b c") == "strangler/revoked/jti/a%2Fb%20c"
    with pytest.raises(ValueError):
        jti_key("")


def test_lease_outlives_the_token_by_the_leeway():
    assert lease_ttl(expires_at=1000.0, now=900.0, leeway=5) == 105
    assert lease_ttl(expires_at=1000.0, now=999.2, leeway=0) == 1
    assert lease_ttl(expires_at=1000.0, now=1010.0, leeway=5) == 0


def test_cache_of_a_second_or_more_is_refused():
    with pytest.raises(ValueError, match="cache_seconds"):
        EtcdRevocationStore(etcd=None, cache_seconds=1)


def test_a_token_lifetime_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="max_token_ttl"):
        EtcdRevocationStore(etcd=None, max_token_ttl=0)


def _jti() -> str:
    return uuid.uuid4().hex


@pytest.mark.integration
def test_a_revoked_jti_is_refused_by_every_store(etcd_server):
    one, other = EtcdRevocationStore(etcd_server.client()), EtcdRevocationStore(etcd_server.client())
    jti, untouched = _jti(), _jti()
    assert not other.is_revoked(jti)
    one.revoke(jti, time.time() + 3600)
    assert other.is_revoked(jti) and one.is_revoked(jti)
    assert not other.is_revoked(untouched)
    entry = etcd_server.client().get_entry(jti_key(jti))
    assert entry.lease != 0


@pytest.mark.integration
def test_the_revocation_expires_after_the_token(etcd_server):
    store = EtcdRevocationStore(etcd_server.client(), leeway=0)
    jti = _jti()
    store.revoke(jti, time.time() + 1)
    assert store.is_revoked(jti)
    took = procs.wait_until(lambda: not store.is_revoked(jti), 8, "expiry of the revocation")
    assert took > 0.5  # it was kept until the token itself expired


@pytest.mark.integration
def test_an_expired_token_leaves_nothing_behind(etcd_server):
    store = EtcdRevocationStore(etcd_server.client(), leeway=0)
    jti = _jti()
    store.revoke(jti, time.time() - 10)
    assert etcd_server.client().get(jti_key(jti)) is None


@pytest.mark.integration
def test_user_revocation_keeps_the_latest_time(etcd_server):
    store = EtcdRevocationStore(etcd_server.client())
    user = int(time.time() * 1000) % 1_000_000
    assert store.user_revoked_at(user) is None
    store.revoke_user(user, 1000.5)
    assert store.user_revoked_at(user) == 1000.5
    store.revoke_user(user, 900.0)  # an older revocation must not undo a newer one
    assert store.user_revoked_at(user) == 1000.5
    store.revoke_user(user, 2000.0)
    assert EtcdRevocationStore(etcd_server.client()).user_revoked_at(user) == 2000.0
    assert store.user_revoked_at(user + 1) is None


@pytest.mark.integration
def test_user_revocation_expires_after_the_longest_token_lifetime(etcd_server):
    store = EtcdRevocationStore(etcd_server.client(), max_token_ttl=1, leeway=0)
    user = 7_000_000 + int(time.time()) % 1000
    store.revoke_user(user, time.time())
    assert store.user_revoked_at(user) is not None
    procs.wait_until(lambda: store.user_revoked_at(user) is None, 8, "expiry of the user revocation")


@pytest.mark.integration
def test_works_with_the_monoliths_token_check(etcd_server):
    from monolith.revocation import RevocationStore, is_token_revoked

    store = EtcdRevocationStore(etcd_server.client())
    assert isinstance(store, RevocationStore)
    user, now = 8_000_000 + int(time.time()) % 1000, time.time()
    fresh = {"jti": _jti(), "sub": str(user), "iat": now}
    old = {"jti": _jti(), "sub": str(user), "iat": now - 60}
    store.revoke_user(user, now - 30)
    assert is_token_revoked(store, old) and not is_token_revoked(store, fresh)
    store.revoke(fresh["jti"], now + 3600)
    assert is_token_revoked(store, fresh)


@pytest.mark.integration
def test_a_cached_answer_turns_within_a_second(etcd_server):
    cached = EtcdRevocationStore(etcd_server.client(), cache_seconds=0.5)
    writer = EtcdRevocationStore(etcd_server.client())
    jti = _jti()
    assert not cached.is_revoked(jti)  # now cached as "not revoked"
    writer.revoke(jti, time.time() + 3600)
    revoked_at = time.monotonic()
    procs.wait_until(lambda: cached.is_revoked(jti), 2, "cached store noticing the revocation")
    assert time.monotonic() - revoked_at < 1
    # A store's own revocation is visible to itself at once.
    mine = _jti()
    assert not cached.is_revoked(mine)
    cached.revoke(mine, time.time() + 3600)
    assert cached.is_revoked(mine)
