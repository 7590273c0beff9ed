"""strangler.stack.ports: picking the stack's ports, and a one-line refusal for a taken one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from strangler.plan import Plan
from strangler.stack.lifecycle import StackError
from strangler.stack.ports import Ports, check_ports, port_holder, resolve_ports
from strangler.stack.procs import free_port


def make_plan(tmp_path: Path, stack: dict, **monolith: object) -> Plan:
    data = {
        "stack": stack,
        "backends": {
            "monolith": {"command": "serve {port}", "health": "/healthz", "app": "m:create_app", **monolith},
            "idle": {"command": "idle {port}", "health": "/healthz", "start": False, "port": 7000},
        },
    }
    return Plan.from_data(data, tmp_path / "strangler.toml")


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def others(web: int) -> Ports:
    """Ports with ``web`` and free ones for the rest."""
    rest: set[int] = set()
    while len(rest) < 5:
        rest |= {free_port()} - {web}
    dashboard, etcd, etcd_peer, redis, internal = sorted(rest)
    return Ports(web=web, dashboard=dashboard, etcd=etcd, etcd_peer=etcd_peer, redis=redis, internal=internal)


def test_fixed_ports_are_kept_and_zeros_get_distinct_free_ones(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, {"web_port": 18000, "dashboard_port": 0, "etcd_port": 0,
                                "etcd_peer_port": 0, "redis_port": 0}, instances=3, port=19000)
    ports, backends = resolve_ports(plan, {"redis": 18001, "etcd": 0})
    assert (ports.web, ports.redis) == (18000, 18001)
    assert backends == {"monolith": [19000, 19001, 19002]}  # a backend with start = false gets none
    chosen = [ports.dashboard, ports.etcd, ports.etcd_peer, ports.internal]
    assert len(set(chosen)) == 4 and not set(chosen) & {18000, 18001, 19000, 19001, 19002}
    assert all(port > 0 for port in chosen)


def test_a_taken_port_is_refused_naming_the_option_and_the_holder(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, {})
    with listening() as held:
        port = held.getsockname()[1]
        ports = others(web=port)
        with pytest.raises(StackError) as refused:
            check_ports(plan, ports, {}, {})
    message = str(refused.value)
    assert message.startswith(f"port {port} (web_port) is already in use")
    assert "--web-port or [stack] web_port in strangler.toml" in message
    assert f"(pid {os.getpid()})" in message  # this test's own socket, found through psutil


def test_a_backend_port_clashing_with_the_stack_names_the_plan_key(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, {})
    with listening() as free_later:
        port = free_later.getsockname()[1]
    ports = others(web=port)
    with pytest.raises(StackError, match=rf"port {port} is both web_port and backends.monolith.port"):
        check_ports(plan, ports, {"monolith": [port]}, {})


def test_port_holder_falls_back_to_the_usual_suspect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unused = probe.getsockname()[1]  # bound, not listening: nobody holds it
    assert port_holder(unused) == "another program"
    if not any(f":{6379:04X} " in line for line in Path("/proc/net/tcp").read_text().splitlines()):
        assert port_holder(6379) == "a system Redis"
