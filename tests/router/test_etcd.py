"""router.etcd against a real etcd."""

import socket
import time

import pytest

from router.etcd import (
    Compare,
    Etcd,
    EtcdError,
    EtcdUnavailable,
    Put,
    RevisionCompacted,
    TxnTooLarge,
)

pytestmark = pytest.mark.integration


def test_put_get_and_missing_key(kv):
    kv.put("a/b", "välue ✓")
    assert kv.get("a/b") == "välue ✓"
    assert kv.get("a/c") is None


def test_get_prefix_returns_only_the_prefix_and_the_read_revision(kv):
    kv.put("p/1", "one")
    revision = kv.put("p/2", "two")
    kv.put("q/1", "other")
    values, read_at = kv.get_prefix("p/")
    assert values == {"p/1": "one", "p/2": "two"}
    assert read_at == revision + 1  # the put of q/1 came after


def test_get_prefix_at_reads_the_past(kv):
    revision = kv.put("h/x", "old")
    kv.put("h/x", "new")
    kv.put("h/y", "later")
    assert kv.get_prefix_at("h/", revision) == {"h/x": "old"}
    assert kv.get_prefix("h/")[0] == {"h/x": "new", "h/y": "later"}


def test_txn_applies_when_compares_hold(kv):
    assert kv.txn([Compare("guard", 0)], [Put("guard", "1"), Put("k", "v")], [])
    entry = kv.get_entry("guard")
    assert kv.txn([("guard", entry.mod_revision)], {"guard": "2"}, ["k"])
    assert kv.get("guard") == "2"
    assert kv.get("k") is None


def test_txn_writes_nothing_when_a_compare_fails(kv):
    kv.put("guard", "1")
    assert not kv.txn([Compare("guard", 0)], [Put("guard", "x"), Put("k", "v")], [])
    assert kv.get("guard") == "1"
    assert kv.get("k") is None


def test_txn_revision_is_the_written_revision(kv):
    revision = kv.txn_revision([], {"r": "1"})
    assert kv.get_entry("r").mod_revision == revision


def test_delete_and_delete_prefix(kv):
    kv.put("d/1", "x")
    kv.put("d/2", "x")
    kv.put("e", "x")
    assert kv.delete("d/1") is True
    assert kv.delete("d/1") is False
    assert kv.delete_prefix("d/") == 1
    assert kv.get_prefix("")[0] == {"e": "x"}


def test_lease_keys_vanish_on_revoke(kv):
    lease = kv.lease(10)
    kv.put("leased", "x", lease=lease)
    kv.txn([], [Put("leased2", "y", lease.id)])
    assert kv.get_entry("leased").lease == lease.id
    assert lease.refresh() > 0
    lease.revoke()
    assert kv.get("leased") is None
    assert kv.get("leased2") is None
    assert lease.refresh() == -1


def test_lease_keys_vanish_on_expiry(kv):
    lease = kv.lease(1)
    kv.put("short", "x", lease=lease)
    deadline = time.monotonic() + 6
    while kv.get("short") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kv.get("short") is None


def test_too_many_ops_raises_a_one_line_error(kv):
    # The fixture's etcd allows 20000 ops per transaction.
    with pytest.raises(TxnTooLarge) as raised:
        kv.txn([], {f"big/{i}": "v" for i in range(20001)})
    assert "--max-txn-ops" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert kv.get_prefix("big/")[0] == {}


def test_reading_a_future_revision_is_refused(kv):
    with pytest.raises(EtcdError) as raised:
        kv.get_prefix_at("x/", kv.revision() + 1000)
    assert "future revision" in str(raised.value)
    assert not isinstance(raised.value, RevisionCompacted)


def test_unreachable_etcd_raises_a_one_line_hint():
    with socket.socket() as sock:  # a port that is closed once the socket is
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EtcdUnavailable) as raised:
        Etcd.connect(f"http://127.0.0.1:{port}", timeout=1)
    message = str(raised.value)
    assert message == (
        f"etcd at http://127.0.0.1:{port} is not answering: "
        "start it with `strangler up` or pass --etcd"
    )


def test_every_call_on_a_dead_etcd_raises_unavailable():
    dead = Etcd("http://127.0.0.1:9", timeout=1)
    for call in (
        lambda: dead.get("k"),
        lambda: dead.get_prefix("k"),
        lambda: dead.put("k", "v"),
        lambda: dead.txn([], {"k": "v"}),
        lambda: dead.lease(5),
        dead.revision,
    ):
        with pytest.raises(EtcdUnavailable):
            call()


def test_connect_waits_for_a_late_etcd(kv_url):
    started = time.monotonic()
    assert Etcd.connect(kv_url, wait=5).revision() > 0
    assert time.monotonic() - started < 5


def test_url_without_scheme_or_port_is_normalised():
    assert Etcd("127.0.0.1").url == "http://127.0.0.1:2379"
    assert Etcd("http://localhost:1234/").url == "http://localhost:1234"
    with pytest.raises(ValueError):
        Etcd("http://:80")


def test_cached_reads_are_read_again_only_after_a_write(kv):
    from router.etcd import CachedReads

    kv.put("sup/scale/users", "1")
    kv.put("sup/plan", "a")
    reads = CachedReads(Etcd(kv.current))
    reads.check()
    assert reads.get("sup/plan") == "a" and reads.get_prefix("sup/scale/")[0] == {"sup/scale/users": "1"}
    kv.put("sup/scale/users", "3")  # another client writes between two checks
    kv.put("sup/plan", "b")
    # until the next check the loop's reads come from memory ...
    assert reads.get("sup/plan") == "a" and reads.get_prefix("sup/scale/")[0] == {"sup/scale/users": "1"}
    reads.check()  # ... and the first check after a write reads everything again
    assert reads.get("sup/plan") == "b" and reads.get_prefix("sup/scale/")[0] == {"sup/scale/users": "3"}
    found, _ = reads.get_prefix("sup/scale/")
    found.clear()  # a caller's change never reaches the cache
    reads.check()  # nothing written: the cached reads stand
    assert reads.get_prefix("sup/scale/")[0] == {"sup/scale/users": "3"}


def test_cached_reads_read_through_when_etcd_cannot_say_its_revision():
    from router.etcd import CachedReads

    with socket.socket() as sock:  # a port that is closed once the socket is
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reads = CachedReads(Etcd(f"http://127.0.0.1:{port}", timeout=0.5))
    reads.check()  # no revision: nothing is cached, every read goes to etcd (and fails there)
    with pytest.raises(EtcdError):
        reads.get("sup/plan")
