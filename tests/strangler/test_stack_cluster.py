"""strangler.stack.cluster: a real three-member etcd on loopback, started and described."""

from __future__ import annotations

import pytest

from router.etcd import Etcd
from strangler.stack import cluster, procs


def test_members_get_the_plan_ports_first_and_distinct_free_ports_after():
    members = cluster.plan_members(3, 2379, 2380)
    assert members[0] == cluster.Member("etcd", 2379, 2380)
    ports = [p for m in members for p in (m.client_port, m.peer_port)]
    assert len(set(ports)) == 6
    assert cluster.initial_cluster(members[:1]) == "etcd=http://127.0.0.1:2380"


@pytest.mark.parametrize("count", [0, 8])
def test_a_cluster_size_out_of_range_is_refused_in_one_line(count):
    with pytest.raises(ValueError, match=f"etcd_members is {count}; give 1 to 7"):
        cluster.plan_members(count, 2379, 2380)


@pytest.mark.integration
def test_three_members_start_with_one_leader_and_serve_through_any_member(tmp_path):
    members = cluster.plan_members(3, procs.free_port(), procs.free_port())
    started = cluster.start_cluster(members, tmp_path / "data", tmp_path / "logs", unsafe_no_fsync=True)
    try:
        rows = cluster.members_status(members)
        assert [r["name"] for r in rows] == ["etcd", "etcd-2", "etcd-3"]
        assert all(r["healthy"] for r in rows)
        assert sum(r["leader"] for r in rows) == 1
        assert cluster.leader(members).name == next(r["name"] for r in rows if r["leader"])
        Etcd(members[0].url).put("k", "v")
        assert {Etcd(m.url).get("k") for m in members} == {"v"}
        started[2].stop()
        down = cluster.members_status(members)[2]
        assert down == {"name": "etcd-3", "url": members[2].url, "healthy": False, "leader": False}
    finally:
        for proc in started:
            proc.stop()


def test_a_stack_keeps_its_members_and_refuses_another_size(tmp_path):
    first = cluster.stack_members(tmp_path / "etcd", 3, 2379, 2380)
    assert cluster.stack_members(tmp_path / "etcd", 3, 9999, 9998) == first  # recorded ports win
    with pytest.raises(ValueError, match=r"holds an etcd cluster of 3 members and the plan asks for 1; "
                                         r"set \[stack\] etcd_members = 3, or `strangler down` and delete"):
        cluster.stack_members(tmp_path / "etcd", 1, 2379, 2380)
    (tmp_path / "single" / "member-data").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds a single etcd member and the plan asks for 3"):
        cluster.stack_members(tmp_path / "single", 3, 2379, 2380)


def test_down_stops_every_etcd_member_last_so_backends_leave_the_registry_with_quorum():
    from strangler.stack.down import stop_order

    others, core = stop_order(["etcd", "etcd-2", "redis", "users.0", "etcd-3", "traefik", "console"])
    assert others == ["users.0", "console"]
    assert core == ["traefik", "redis", "etcd-2", "etcd-3", "etcd"]
