"""A local etcd cluster of one or more members on loopback, and what each member says of itself.

Member ``etcd`` takes the plan's etcd client and peer ports; the others
(``etcd-2`` …) take free ports chosen when the cluster is first started,
recorded in ``<data_dir>/members.json`` so a member restarted later, or the
next ``up``, gets the same ports back: its peers know it by its peer URL. Each member has its own data dir under ``<run_dir>/etcd/``; a
member started again on an existing data dir rejoins the cluster from it and
ignores the initial-cluster flags.

Elections are tuned for loopback (50 ms heartbeats, 500 ms election timeout)
so losing the leader costs about half a second instead of etcd's 1-2 s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from datalink.files import private_dir, write_private
from strangler.stack import procs

HOST = "127.0.0.1"
HEARTBEAT_MS = 50
ELECTION_MS = 500
MEMBERS_FILE = "members.json"
SINGLE_DATA = "member-data"  # where procs.start_etcd keeps a lone member's data


@dataclass(frozen=True)
class Member:
    """One member's name and ports."""

    name: str
    client_port: int
    peer_port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "client_port": self.client_port, "peer_port": self.peer_port}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Member:
        return cls(str(data["name"]), int(data["client_port"]), int(data["peer_port"]))


def plan_members(
    count: int, client_port: int, peer_port: int, free_port: Callable[[], int] = procs.free_port
) -> list[Member]:
    """``count`` members: the first on the given ports, the others on free ones."""
    if not 1 <= count <= 7:
        raise ValueError(f"etcd_members is {count}; give 1 to 7 (3 or 5 survive losing 1 or 2)")
    members = [Member("etcd", client_port, peer_port)]
    taken = {client_port, peer_port}
    while len(members) < count:
        ports = []
        while len(ports) < 2:
            port = free_port()
            if port not in taken:
                taken.add(port)
                ports.append(port)
        members.append(Member(f"etcd-{len(members) + 1}", *ports))
    return members


def stack_members(data_dir: Path | str, count: int, client_port: int, peer_port: int) -> list[Member]:
    """The members of a stack's cluster: those recorded under ``data_dir``, else a new set, recorded.

    ValueError (one line, saying what to do) when ``data_dir`` holds a
    cluster of another size, or a lone member's data.
    """
    data_dir = Path(data_dir)
    path = data_dir / MEMBERS_FILE
    start_over = (f"or `strangler down` and delete {data_dir} to start a new cluster "
                  "(the route table is then rebuilt from the plan: flips are lost)")
    if path.exists():
        recorded = [Member.from_dict(m) for m in json.loads(path.read_text(encoding="utf-8"))]
        if len(recorded) != count:
            raise ValueError(f"{data_dir} holds an etcd cluster of {len(recorded)} members and the plan asks "
                             f"for {count}; set [stack] etcd_members = {len(recorded)}, {start_over}")
        return recorded
    if (data_dir / SINGLE_DATA).exists():
        raise ValueError(f"{data_dir} holds a single etcd member and the plan asks for {count}; "
                         f"set [stack] etcd_members = 1, {start_over}")
    members = plan_members(count, client_port, peer_port)
    private_dir(data_dir)
    write_private(path, json.dumps([m.to_dict() for m in members]))
    return members


def initial_cluster(members: Sequence[Member]) -> str:
    """PURE: etcd's ``--initial-cluster`` value, ``name=peer_url`` joined by commas."""
    return ",".join(f"{m.name}={m.peer_url}" for m in members)


def member_argv(
    member: Member, members: Sequence[Member], data_dir: Path, *, token: str,
    max_txn_ops: int = 20000, unsafe_no_fsync: bool = False,
) -> list[str]:
    """The command line that starts (or restarts) ``member`` of ``members``."""
    argv = [
        procs.find_binary("etcd"),
        f"--name={member.name}",
        f"--data-dir={data_dir / member.name}",
        f"--listen-client-urls={member.url}",
        f"--advertise-client-urls={member.url}",
        f"--listen-peer-urls={member.peer_url}",
        f"--initial-advertise-peer-urls={member.peer_url}",
        f"--initial-cluster={initial_cluster(members)}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={token}",
        f"--heartbeat-interval={HEARTBEAT_MS}",
        f"--election-timeout={ELECTION_MS}",
        f"--max-txn-ops={max_txn_ops}",
        "--log-level=warn",
    ]
    if unsafe_no_fsync:
        argv.append("--unsafe-no-fsync")
    return argv


def start_member(
    member: Member, members: Sequence[Member], data_dir: Path | str, log_dir: Path | str, **options: Any
) -> procs.Proc:
    """Start ``member`` (not waiting for it: a lone member of three has no quorum to be healthy with)."""
    data_dir = private_dir(data_dir)
    argv = member_argv(member, members, data_dir, **options)
    return procs.Proc(member.name, argv, Path(log_dir) / f"{member.name}.log", url=member.url).start()


def start_cluster(
    members: Sequence[Member], data_dir: Path | str, log_dir: Path | str, *, timeout: float = 30,
    **options: Any,
) -> list[procs.Proc]:
    """Start every member, then wait until each says it is healthy (it has a leader: quorum).

    On failure every member started is stopped again and StartupError names the one to read.
    """
    started: list[procs.Proc] = []
    try:
        start_members(members, data_dir, log_dir, started, **options)
        for proc in started:
            procs.wait_until(lambda url=proc.url: healthy(url), timeout, f"{proc.name} ({proc.url})", proc=proc)
    except BaseException:
        for proc in started:
            proc.stop(timeout=2)
        raise
    return started


def start_members(
    members: Sequence[Member], data_dir: Path | str, log_dir: Path | str,
    started: list[procs.Proc] | None = None, **options: Any,
) -> list[procs.Proc]:
    """Start every member without waiting; return them (appended to ``started`` as each starts).

    ``started`` lets a caller stop the members already running when a later one fails to start.
    """
    options.setdefault("token", f"strangler-{Path(data_dir).resolve()}")
    started = [] if started is None else started
    for member in members:
        started.append(start_member(member, members, data_dir, log_dir, **options))
    return started


def healthy(url: str, timeout: float = 1.0) -> bool:
    """True when the member at ``url`` answers ``/health`` with health true (it sees a leader)."""
    return procs.http_ok(f"{url}/health", timeout=timeout, expect=_says_healthy)


def _says_healthy(response: requests.Response) -> bool:
    try:
        return response.json().get("health") == "true"
    except ValueError:
        return False


def member_status(member: Member, timeout: float = 1.0) -> dict[str, Any] | None:
    """The member's own status (``header.member_id``, ``leader``), or None when it does not answer."""
    try:
        answer = requests.post(f"{member.url}/v3/maintenance/status", json={}, timeout=timeout)
        return answer.json() if answer.ok else None
    except (requests.RequestException, ValueError):
        return None


def leader(members: Sequence[Member], timeout: float = 1.0) -> Member | None:
    """The member every answering member follows, or None (no answer, no leader, or disagreement)."""
    statuses = {m.name: member_status(m, timeout) for m in members}
    answered = {name: s for name, s in statuses.items() if s is not None}
    leaders = {str(s.get("leader", "0")) for s in answered.values()}
    if len(leaders) != 1 or leaders == {"0"}:
        return None
    ids = {str((s.get("header") or {}).get("member_id")): name for name, s in answered.items()}
    name = ids.get(leaders.pop())
    return next((m for m in members if m.name == name), None)


def members_status(members: Sequence[Member], timeout: float = 1.0) -> list[dict[str, Any]]:
    """Per member: name, url, healthy (answers and sees a leader), leader (it is the one)."""
    rows = []
    for member in members:
        status = member_status(member, timeout)
        member_id = str(((status or {}).get("header") or {}).get("member_id", ""))
        rows.append({
            "name": member.name, "url": member.url,
            "healthy": status is not None and healthy(member.url, timeout),
            "leader": status is not None and str(status.get("leader", "")) == member_id,
        })
    return rows
