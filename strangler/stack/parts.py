"""What ``strangler up`` starts, as parts for strangler.stack.startup: how each starts, what it needs, when it is ready.

One function per kind of part, each taking the :class:`~strangler.stack.lifecycle.Stack`
that tracks what it starts (pid files, health checks for the supervisor):

- **etcd** (one member or a cluster) and **Redis** need nothing;
- the **data** links (schemas upgraded, tables copied) run in a thread once etcd answers;
- the **routes** (the plan's table, keeping live flips) are written in a thread, then **Traefik** starts;
- each **backend instance** needs Redis, and the data links when it uses linked data;
  it is ready once it answers its health path, is registered in etcd and Traefik balances over it;
- the **console** needs etcd.

The sync followers and the promotion controller are started without waiting (nothing waits for them).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from router import registry
from router.etcd import Etcd, EtcdError
from router.traefik import TraefikError, seed_root_key, static_config, write_static_config
from strangler.stack import cluster, procs
from strangler.stack.data import follower_proc, link_services
from strangler.stack.launch import HOST, Launch
from strangler.stack.ports import Ports
from strangler.stack.procs import StackError
from strangler.stack.startup import Part

if TYPE_CHECKING:
    from strangler.stack.lifecycle import Stack

Echo = Callable[[str], None]


def etcd_part(stack: Stack, ports: Ports, logs: Path) -> tuple[Part, str]:
    """One etcd member, or a cluster of ``[stack] etcd_members``; and every client URL, comma-joined.

    A cluster's members are supervised like any process: one killed is
    restarted on its data dir and rejoins. Every client (Traefik, the
    backends, the CLI through ``state.json``) gets all the URLs.
    """
    count = stack.plan.stack.etcd_members
    data = stack.run_dir / "etcd"
    if count == 1 and not (data / cluster.MEMBERS_FILE).exists():
        url = f"http://{HOST}:{ports.etcd}"
        stack.checks["etcd"] = lambda: procs.etcd_ok(url, timeout=0.5)
        return Part("etcd", lambda: [stack._track(procs.start_etcd(
            data, ports.etcd, ports.etcd_peer, log_path=logs / "etcd.log", wait=False))],
            checks=[(f"etcd ({url})", stack.checks["etcd"])], describe=lambda: url), url
    try:
        stack.etcd_members = cluster.stack_members(data, count, ports.etcd, ports.etcd_peer)
    except ValueError as exc:
        raise StackError(str(exc)) from None
    urls = [m.url for m in stack.etcd_members]
    checks = []
    for member in stack.etcd_members:
        stack.checks[member.name] = lambda url=member.url: cluster.healthy(url, timeout=0.5)
        checks.append((f"{member.name} ({member.url})", stack.checks[member.name]))

    def start() -> list[procs.Proc]:
        started: list[procs.Proc] = []
        try:
            cluster.start_members(stack.etcd_members, data, logs, started)
        finally:
            for proc in started:
                stack._track(proc)
        return started

    return Part("etcd", start, checks=checks,
                describe=lambda: f"{count} members: {' '.join(urls)}"), ",".join(urls)


def redis_part(stack: Stack, ports: Ports, logs: Path, password: str) -> Part:
    """Redis: Socket.IO's message queue between the backends' processes."""
    stack.checks["redis"] = lambda: procs.redis_ping(ports.redis, 0.5, password=password)
    return Part("redis", lambda: [stack._track(procs.start_redis(
        ports.redis, stack.run_dir / "redis", log_path=logs / "redis.log", password=password, wait=False))],
        checks=[(f"redis ({procs.redis_url(ports.redis)})", stack.checks["redis"])],
        describe=lambda: procs.redis_url(ports.redis))


def data_part(stack: Stack, etcd_url: str, linked: list[str]) -> Part:
    """Schemas upgraded and data linked (strangler.stack.data), in a thread, before the backends using it."""
    part = Part("data", describe=lambda: f"{', '.join(linked)} linked")
    # its own etcd client: the polling loop's is used meanwhile
    part.background = lambda: link_services(stack.plan, Etcd(etcd_url), linked, part.say)
    return part


def routes_part(stack: Stack, etcd_url: str) -> Part:
    """The route table made to match the plan, in a thread (see :func:`write_routes`)."""
    part = Part("routes", needs=["etcd"], quiet=True)  # Traefik's ready line says it
    part.background = lambda: write_routes(stack, Etcd(etcd_url), part.say)
    return part


def traefik_part(stack: Stack, ports: Ports, logs: Path, etcd_url: str) -> Part:
    """Traefik, once the route table is written (so its first read routes the plan's prefixes)."""
    config = static_config(
        web_port=ports.web, api_port=ports.dashboard, etcd_endpoints=etcd_url.split(","),
        access_log_path=str(logs / "traefik-access.log"), host=HOST, internal_port=ports.internal)
    path = write_static_config(stack.run_dir / "traefik.yml", config)
    url = f"http://{HOST}:{ports.dashboard}"
    stack.checks["traefik"] = lambda: procs.traefik_ok(url, timeout=0.5)
    return Part("traefik", lambda: [stack._track(procs.start_traefik(
        path, log_path=logs / "traefik.log", wait=False))],
        checks=[(f"traefik ({url})", stack.checks["traefik"])], needs=["routes"], describe=lambda: url)


def backend_part(stack: Stack, launch: Launch, web: str, linked: Sequence[str]) -> Part:
    """One backend instance: healthy directly, registered in etcd, and served by Traefik.

    It needs Redis (every backend may use Socket.IO's queue) and, when it
    uses linked data (the monolith, a linked service), the data links.
    Only the monolith's failure ends the start: another backend that ends
    while starting is the supervisor's to restart (or mark crashlooping).
    """
    uses_data = bool(linked) and (launch.backend == stack.plan.monolith or launch.backend in linked)
    health = launch.url + launch.health_path
    return Part(
        launch.name, lambda: [stack.start_instance(launch)],
        checks=[(f"{launch.name} ({health})", lambda: procs.http_ok(health, timeout=0.5)),
                (f"{launch.name}'s registration in etcd", lambda: registered(stack, launch)),
                (f"Traefik routing to {launch.name}", lambda: routed(stack, launch, web))],
        needs=["redis", *(["data"] if uses_data else [])],
        optional=launch.backend != stack.plan.monolith, describe=lambda: launch.url)


def console_part(stack: Stack, port: int, etcd_url: str, traefik_url: str) -> Part:
    """The console (strangler console), on loopback, a managed process like the backends."""
    url = f"http://{HOST}:{port}"
    stack.state["console"] = url + "/"

    def start() -> list[procs.Proc]:
        # imported here, once the backends' processes are on their way (it costs the loop ~0.2 s)
        from strangler.console.cli import console_argv, console_env

        env = console_env(run_dir=stack.run_dir, plan=stack.plan.path, etcd=etcd_url, traefik_api=traefik_url)
        proc = procs.Proc("console", console_argv(HOST, port), stack.run_dir / "logs" / "console.log",
                          env=env, url=url)
        return [stack.launch(proc)]

    return Part("console", start, checks=[(f"console ({url})", lambda: procs.http_ok(url + "/healthz", timeout=0.5))],
                describe=lambda: url)


def start_followers(stack: Stack, linked: Sequence[str]) -> None:
    """One sync follower per linked service (both directions), a managed process like the rest."""
    for service in linked:
        proc, metrics = follower_proc(stack.plan, stack.run_dir, service)
        stack.launch(proc)
        stack.state["data"][service]["metrics"] = metrics


def start_controller(stack: Stack, etcd_url: str, traefik_url: str) -> None:
    """The promotion controller (strangler.promote.controller), a managed process like the followers."""
    argv = [sys.executable, "-m", "strangler.promote", "--etcd", etcd_url,
            "--traefik-metrics", traefik_url, "--shadow-store", str(stack.run_dir / "shadow.sqlite")]
    proc = procs.Proc("controller", argv, stack.run_dir / "logs" / "controller.log",
                      cwd=str(stack.plan.path.parent if stack.plan.path else Path.cwd()))
    stack.launch(proc)


def write_routes(stack: Stack, client: Etcd, echo: Echo) -> None:
    """Make the route table match the plan (keeping earlier flips) before Traefik reads it.

    The same change as ``strangler plan apply --keep-live``, so the first
    table already routes the plan's prefixes (Socket.IO, static files) and
    health checks, and starting a stack never moves a live route: ones
    the plan would move are named, for ``plan apply --yes``.
    """
    from strangler.routing.apply import apply_plan

    held = apply_plan(client, stack.plan, moves="keep").moves
    if held:
        echo(f"kept {len(held)} live route(s) the plan would move "
             f"(strangler plan apply --yes moves them): {'; '.join(held)}")
    seed_root_key(client)


def registered(stack: Stack, launch: Launch) -> bool:
    """``launch`` is registered in etcd (one read per backend per polling round)."""
    def read() -> set[str]:
        try:
            return {i.url for i in registry.instances(stack.client, launch.backend)}
        except EtcdError:
            return set()

    return launch.url in stack._seen.get(("registered", launch.backend), read)


def routed(stack: Stack, launch: Launch, web: str) -> bool:
    """Traefik balances over ``launch`` (and finds it UP where it health-checks); the monolith end to end too."""
    def read() -> dict:
        try:
            return stack.api.service(launch.traefik_service) or {}
        except TraefikError:
            return {}

    service = stack._seen.get(("service", launch.traefik_service), read)
    servers = (service.get("loadBalancer") or {}).get("servers") or []
    if launch.url not in [server.get("url") for server in servers]:
        return False
    # Traefik health-checks only services a router uses (others have no serverStatus)
    if service.get("usedBy") and (service.get("serverStatus") or {}).get(launch.url) != "UP":
        return False
    # the monolith is also checked end to end, through the catch-all
    return launch.backend != stack.plan.monolith or procs.http_ok(web + launch.health_path, timeout=0.5)
