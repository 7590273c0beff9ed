"""The local stack's ports: which ones, picked how, and who holds a taken one.

``up`` checks every port before it starts anything, so a taken port costs
one line of explanation and no half-started stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from strangler.plan import Plan
from strangler.stack import procs
from strangler.stack.procs import StackError

# Ports.<field> -> (the `strangler up` option, the plan key) that change it.
PORT_OPTIONS = {
    "web": ("--web-port", "web_port"),
    "dashboard": ("--dashboard-port", "dashboard_port"),
    "etcd": ("--etcd-port", "etcd_port"),
    "etcd_peer": ("--etcd-peer-port", "etcd_peer_port"),
    "redis": ("--redis-port", "redis_port"),
    "internal": ("--internal-port", "internal_port"),
    "console": ("--console-port", "console_port"),
}
# Who usually listens on a port, for when the system does not tell us (another user's process).
WELL_KNOWN = {
    80: "a web server", 443: "a web server", 2379: "a system etcd", 2380: "a system etcd",
    3306: "MariaDB/MySQL", 5432: "PostgreSQL", 5672: "RabbitMQ", 6379: "a system Redis",
    8000: "another development server", 8080: "another web server or proxy",
    1883: "an MQTT broker", 4222: "NATS",
}


@dataclass(frozen=True)
class Ports:
    """The stack's own ports on 127.0.0.1 (``dashboard`` is Traefik's dashboard and API,
    ``internal`` its entrypoint for the services' calls to each other)."""

    web: int
    dashboard: int
    etcd: int
    etcd_peer: int
    redis: int
    internal: int
    console: int = 0  # the console's (strangler console); 0 only where no stack starts one


def resolve_ports(
    plan: Plan, overrides: Mapping[str, int]
) -> tuple[Ports, dict[str, list[int]]]:
    """The stack's ports (overrides, else the plan's ``[stack]``; 0 = a free one) and each
    started backend's instance ports (``port``, ``port+1``, ... or free ones).

    ``overrides`` is keyed like :class:`Ports` (``web``, ``redis``, ...).
    """
    fixed = {field: overrides.get(field, getattr(plan.stack, key)) for field, (_, key) in PORT_OPTIONS.items()}
    wanted = {
        name: [b.port + i if b.port else 0 for i in range(b.instances)]
        for name, b in plan.backends.items()
        if b.start
    }
    # Fixed ports first, so a free pick never lands on one named later.
    taken = {p for p in fixed.values() if p} | {p for ports in wanted.values() for p in ports if p}

    def pick(port: int) -> int:
        while not port:
            candidate = procs.free_port()
            if candidate not in taken:
                taken.add(candidate)
                port = candidate
        return port

    chosen = {field: pick(port) for field, port in fixed.items()}
    backends = {name: [pick(port) for port in ports] for name, ports in wanted.items()}
    return Ports(**chosen), backends


def port_holder(port: int) -> str:
    """Best guess at who listens on 127.0.0.1:``port``: ``"redis-server (pid 812)"`` when the
    operating system tells us (psutil), else the usual suspect, else ``"another program"``."""
    try:
        listening = [c for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    except (psutil.Error, OSError):  # not allowed to look (another user's sockets, macOS)
        listening = []
    for conn in listening:
        if conn.pid is None:
            continue
        try:
            return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
        except psutil.Error:
            continue
    return WELL_KNOWN.get(port, "another program")


def check_ports(
    plan: Plan, ports: Ports, backend_ports: Mapping[str, list[int]], overrides: Mapping[str, int]
) -> None:
    """Raise StackError for the first port that is taken (or used twice), naming what to change."""

    where = f" in {plan.path.name}" if plan.path else ""
    wanted: list[tuple[int, str, str]] = []
    for field, (option, key) in PORT_OPTIONS.items():
        wanted.append((getattr(ports, field), key, f"{option} or [stack] {key}{where}"))
    for name, numbers in backend_ports.items():
        for port in numbers:
            wanted.append((port, f"backends.{name}.port", f"backends.{name}.port{where} (0 = any free port)"))
    seen: dict[int, str] = {}
    for port, what, change in wanted:
        if port in seen:
            raise StackError(f"port {port} is both {seen[port]} and {what}; change it with {change}")
        seen[port] = what
        if not procs.port_is_free(port):
            raise StackError(f"port {port} ({what}) is already in use, probably by {port_holder(port)}; "
                             f"change it with {change} (nothing was started)")
