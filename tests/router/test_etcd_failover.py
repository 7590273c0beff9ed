"""router.etcd with several endpoints: which calls move on to the next member, and when.

A real etcd behind a hop that breaks connections mid-request (tests/support/
tcp_faults.py): the one fault a live etcd cannot be made to show on cue. The
hop is listed first, so every call meets it before the real member.
"""

import socket

import pytest
from tcp_faults import LossyHop

from router.etcd import Compare, Etcd, EtcdUnavailable, Lease, OutcomeUnknown, Put
from router.etcd_members import parse_endpoints

pytestmark = pytest.mark.integration


@pytest.fixture
def lost_request(kv, kv_url):
    """A hop to the module's etcd that swallows each request (etcd never sees it)."""
    hop = LossyHop(kv_url.removeprefix("http://"), drop="request")
    yield hop
    hop.stop()


@pytest.fixture
def lost_answer(kv, kv_url):
    """A hop to the module's etcd that passes each request on and loses etcd's answer."""
    hop = LossyHop(kv_url.removeprefix("http://"), drop="response")
    yield hop
    hop.stop()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_endpoints_come_as_a_list_or_comma_separated():
    assert parse_endpoints("127.0.0.1:1, http://b:2,127.0.0.1:1") == (
        "http://127.0.0.1:1", "http://b:2")
    assert Etcd(["a", "b:3"]).urls == ("http://a:2379", "http://b:3")
    assert Etcd(endpoints="a,b").url == "http://a:2379,http://b:2379"
    assert Etcd(Etcd("a,b").url).urls == Etcd("a,b").urls  # .url feeds STRANGLER_ETCD back
    with pytest.raises(ValueError, match="no etcd URL"):
        Etcd(" , ")
    with pytest.raises(ValueError, match="not both"):
        Etcd("a", endpoints=["b"])


def test_a_member_that_refuses_connections_is_passed_over(kv, kv_url):
    dead = closed_port_url()
    client = Etcd.connect([dead, kv_url])
    assert client.put("f/k", "v") > 0
    assert client.txn([Compare("f/g", 0)], [Put("f/g", "1")])
    assert client.get("f/k") == "v" and client.current == kv_url
    assert client.lease(5).refresh() > 0


def test_when_no_member_answers_the_error_names_them_all():
    first, second = closed_port_url(), closed_port_url()
    with pytest.raises(EtcdUnavailable) as raised:
        Etcd([first, second], timeout=1).get("k")
    assert str(raised.value).startswith(f"etcd at {first},{second} is not answering")


def test_reads_and_keepalives_move_on_after_a_lost_answer(kv, kv_url, lost_answer):
    kv.put("f/read", "r")
    lease = kv.lease(5)
    client = Etcd([lost_answer.url, kv_url])
    assert client.get("f/read") == "r"
    assert Lease(client, lease.id, lease.ttl).refresh() > 0
    assert lost_answer.exchanges == 1  # the first call met the hop; then it rests a while


def test_a_guarded_txn_whose_request_was_lost_is_sent_again_once(kv, kv_url, lost_request):
    revision = kv.put("f/guard", "0")
    client = Etcd([lost_request.url, kv_url])
    written = client.txn_revision([Compare("f/guard", revision)], [Put("f/guard", "1"), Put("f/x", "a")])
    assert written is not None and lost_request.exchanges == 1
    assert kv.get_entry("f/guard").mod_revision == written == kv.get_entry("f/x").mod_revision


def test_a_guarded_txn_whose_answer_was_lost_reports_its_own_revision(kv, kv_url, lost_answer):
    revision = kv.put("f/guard", "0")
    client = Etcd([lost_answer.url, kv_url])
    written = client.txn_revision([Compare("f/guard", revision)], {"f/guard": "1", "f/y": "b"})
    assert lost_answer.exchanges == 1  # etcd applied it through the hop; the answer was lost
    assert written == kv.get_entry("f/guard").mod_revision == kv.get_entry("f/y").mod_revision
    assert written == revision + 1  # applied once: nothing else was written since


def test_a_lost_answer_to_someone_elses_change_is_a_conflict(kv, kv_url, lost_answer):
    revision = kv.put("f/guard", "0")
    kv.put("f/guard", "theirs")  # another writer got there first
    client = Etcd([lost_answer.url, kv_url])
    assert client.txn_revision([Compare("f/guard", revision)], {"f/guard": "mine"}) is None
    assert kv.get("f/guard") == "theirs"


def test_unguarded_writes_with_a_lost_answer_are_not_sent_again(kv, kv_url, lost_answer):
    client = Etcd([lost_answer.url, kv_url])
    with pytest.raises(OutcomeUnknown, match="may or may not have applied"):
        client.txn([], {"f/unguarded": "1"})
    with pytest.raises(OutcomeUnknown):
        Etcd([lost_answer.url, kv_url]).put("f/plain", "1")
    # applied exactly once each: by the hop's copy, never by a second one
    assert kv.get_entry("f/unguarded").create_revision == kv.get_entry("f/unguarded").mod_revision
    assert kv.get("f/plain") == "1" and lost_answer.exchanges == 2


def test_strangler_etcd_may_list_several_members(kv, kv_url):
    from router import registry
    from router.gunicorn_hooks import registration_from_env

    env = {"STRANGLER_ETCD": f"{closed_port_url()},{kv_url}", "STRANGLER_BACKEND": "multi",
           "STRANGLER_INSTANCE_URL": "http://127.0.0.1:5998"}
    reg = registration_from_env(env).start()
    try:
        assert [i.url for i in registry.instances(kv, "multi")] == ["http://127.0.0.1:5998"]
    finally:
        reg.stop()
