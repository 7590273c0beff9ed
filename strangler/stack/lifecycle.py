"""The local platform: etcd, Redis, Traefik and the plan's backends, started and stopped together.

No Click here (``strangler.stack.cli`` drives it). ``Stack.up()`` starts
everything on 127.0.0.1 and waits until each part is healthy; ``stop()`` drains
and stops what it started; ``down()`` (strangler.stack.down) does the same from
the pid files, in another process; ``status()`` gathers what ``strangler
status`` shows. While it runs, strangler.stack.supervise keeps it running. Everything a stack owns lives in its
run directory (default ``.strangler/``)::

    state.json  secrets.json  traefik.yml  <name>.pid  logs/  etcd/  redis/  data/
"""

from __future__ import annotations

import fcntl
import json
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from datalink.files import load_or_create_secrets, private_dir, private_file, write_private
from router import registry
from router.etcd import Etcd, EtcdError, Lease
from router.traefik import (
    TraefikAPI,
    TraefikError,
    seed_root_key,
    static_config,
    write_static_config,
)
from strangler.plan import Plan
from strangler.stack import cluster, procs
from strangler.stack.data import (
    DataError,
    data_state,
    follower_command,
    link_services,
    services_to_link,
)
from strangler.stack.down import down, stop_order
from strangler.stack.drain import drain, in_parallel
from strangler.stack.launch import HOST, Launch, _resolve_argv, backend_launches
from strangler.stack.ports import PORT_OPTIONS, Ports, check_ports, resolve_ports
from strangler.stack.procs import StackError
from strangler.stack.replan import carry_out
from strangler.stack.retire import read_retired
from strangler.stack.scale import reconcile, write_counts
from strangler.stack.startup import Part, bring_up
from strangler.stack.state import STATE_FILE, STATUS_FILE, read_state, running_records

Echo = Callable[[str], None]


def _already_running(run_dir: Path, records: Mapping[str, procs.PidRecord]) -> str:
    first = records.get("etcd") or next(iter(records.values()))
    return (f"a stack is already running from {run_dir} ({first.name} pid {first.pid}); "
            "stop it with `strangler down`")


class Stack:
    """A local platform built from a plan, a run dir and port overrides (None: the plan's)."""

    def __init__(
        self,
        plan: Plan,
        run_dir: Path | str | None = None,
        ports: Mapping[str, int | None] | None = None,
        *,
        echo: Echo = lambda line: None,
        timeout: float = 60,
    ) -> None:
        self.run_dir = Path(run_dir or plan.run_dir).resolve()
        self.plan = replace(plan, run_dir=self.run_dir)  # {run_dir} placeholders follow --run-dir
        self.overrides = {k: v for k, v in (ports or {}).items() if v is not None}
        members = self.overrides.pop("etcd_members", None)  # up --etcd-members: not a port
        if members:
            self.plan = replace(self.plan, stack=replace(self.plan.stack, etcd_members=members))
        self.echo = echo
        self.timeout = timeout
        self.procs: dict[str, procs.Proc] = {}  # in start order
        self.launches: dict[str, Launch] = {}  # backend instances by process name
        self.releases: dict[str, tuple[str, dict[str, str]]] = {}  # backend -> (release, extra env) now run
        self.checks: dict[str, Callable[[], bool]] = {}  # health checks by process name
        self.etcd_members: list[cluster.Member] = []  # a cluster's (empty: one etcd)
        self.state: dict[str, Any] = {}
        self._seen: dict[tuple[str, str], Any] = {}  # what one polling round read (see _registered)
        self._lock: IO[str] | None = None

    # ---- up ----------------------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        """Start the whole stack and wait until every part is healthy; return ``state.json``'s data.

        Raises StackError (one line) when a stack already runs from this run
        dir, a port is taken (nothing started), or a part fails (everything
        started so far is stopped again, and the message names its log).
        """
        if not self.plan.backends[self.plan.monolith].start:
            raise StackError(f"backends.{self.plan.monolith}.start is false; the stack needs the monolith")
        private_dir(self.run_dir)  # logs, state, pid files and data: the owner's only
        self._take_lock()
        try:
            self._refuse_if_running()
            ports, backend_ports = resolve_ports(self.plan, self.overrides)
            check_ports(self.plan, ports, backend_ports, self.overrides)
            began = time.monotonic()
            try:
                self._start_all(ports, backend_ports)
            except BaseException as exc:  # Ctrl-C included: never leave half a stack behind
                self.stop()
                if isinstance(exc, (procs.StartupError, EtcdError, TraefikError, OSError, DataError)):
                    raise StackError(f"{exc}; stopped everything it had started") from exc
                raise
            self.state["up_seconds"] = round(time.monotonic() - began, 2)
            self.write_state()
            return self.state
        finally:
            self._release_lock()

    def _take_lock(self) -> None:
        # Two `up`s at once would both see no pid files; the second is told instead.
        self._lock = open(private_file(self.run_dir / ".lock"), "w")  # noqa: SIM115 — closed in _release_lock
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._release_lock()
            raise StackError(f"a stack is starting from {self.run_dir} right now; wait, or `strangler down`") from None

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _refuse_if_running(self) -> None:
        live = running_records(self.run_dir)
        if live:
            raise StackError(_already_running(self.run_dir, live))
        stale = procs.read_pidfiles(self.run_dir)
        if stale:  # a previous stack was killed without `down`: its pid files mean nothing now
            for name in stale:
                procs.remove_pidfile(self.run_dir, name)
            (self.run_dir / STATE_FILE).unlink(missing_ok=True)
            self.echo(f"removed {len(stale)} stale pid file(s) of a stack that did not stop cleanly")

    def _track(self, proc: procs.Proc) -> procs.Proc:
        self.procs[proc.name] = proc
        procs.write_pidfile(self.run_dir, proc.name, proc)
        return proc

    def _start_all(self, ports: Ports, backend_ports: Mapping[str, list[int]]) -> None:
        """Everything, as parts brought up together (strangler.stack.startup) in two steps.

        First etcd (every member) and Redis, which need nothing. Once etcd
        answers, the rest at once, each when what it needs is ready: the data
        links (schemas upgraded, tables copied, in a thread) before the
        backends that use them; the route table before Traefik; Redis before
        any backend (Socket.IO's queue); the console after etcd. Backends of
        different names, and instances of one, are independent. The sync
        followers and the promotion controller, which nothing waits for,
        start last so they do not compete for the CPU with what ``up`` waits for.
        """
        logs = self.run_dir / "logs"
        # A fresh Redis password each `up`: Redis keeps no data across restarts, and the
        # backends get it only in SOCKETIO_MESSAGE_QUEUE (their environment, never argv).
        redis_password = secrets.token_urlsafe(24)
        etcd_part, etcd_url = self._etcd_part(ports, logs)
        bring_up([etcd_part, self._redis_part(ports, logs, redis_password)],
                 timeout=self.timeout, echo=self.echo)
        client = Etcd.connect(etcd_url, wait=5)
        self.client = client
        _forget_old_instances(client)
        retired = read_retired(client) is not None  # strangler retire: no linking, no monolith
        linked = [] if retired else services_to_link(self.plan)
        web = f"http://{HOST}:{ports.web}"
        # Services call each other through the internal entrypoint: the only one routing /internal/.
        internal = f"http://{HOST}:{ports.internal}"
        traefik_url = f"http://{HOST}:{ports.dashboard}"
        self.api = TraefikAPI(traefik_url)
        self.state = {
            "run_dir": str(self.run_dir), "plan": str(self.plan.path or ""),
            "strategy": self.plan.strategy, "monolith": self.plan.monolith,
            "etcd": etcd_url, "traefik_api": traefik_url, "web": web, "internal": internal,
            "dashboard": f"{traefik_url}/dashboard/", "redis": procs.redis_url(ports.redis),
            "started": time.time(), "backends": {}, "data": data_state(self.plan, linked),
        }
        if self.etcd_members:
            self.state["etcd_members"] = [m.to_dict() for m in self.etcd_members]
        # One set per run dir (the plan's [strangler] secrets), shared by every backend,
        # so a token signed by one is valid on all.
        try:
            app_secrets = load_or_create_secrets(self.run_dir / "secrets.json", self.plan.secrets)
        except ValueError as exc:
            raise StackError(str(exc)) from None
        self.launch_args = {"etcd_url": etcd_url, "redis_url": procs.redis_url(ports.redis, redis_password),
                            "secrets": app_secrets, "lb_url": internal, "linked": linked}
        launches = backend_launches(self.plan, backend_ports, **self.launch_args)
        counts = {name: len(ports_) for name, ports_ in backend_ports.items()}
        if retired:
            launches = [launch for launch in launches if launch.backend != self.plan.monolith]
            counts[self.plan.monolith] = 0
            self.echo(f"{self.plan.monolith} is retired: not started (`strangler unretire` brings it back)")
        # the plan's counts are where a fresh stack starts; `strangler scale` changes them
        write_counts(client, counts, who="up")
        for launch in launches:  # state.json lists the backends in the plan's order, however they start
            self.state["backends"].setdefault(launch.backend, {"instances": []})
        parts = [self._data_part(etcd_url, linked)] if linked else []
        parts += [self._routes_part(etcd_url), self._traefik_part(ports, logs, etcd_url)]
        parts += [self._backend_part(launch, web, linked) for launch in launches]
        parts.append(self._console_part(ports.console, etcd_url, traefik_url))
        seen: dict[tuple[str, str], Any] = {}  # what one polling round read from etcd and Traefik
        self._seen = seen
        bring_up(parts, timeout=self.timeout, echo=self.echo, ready=["etcd", "redis"], each_round=seen.clear)
        self._start_followers(linked)
        self._start_controller(etcd_url, traefik_url)

    def _etcd_part(self, ports: Ports, logs: Path) -> tuple[Part, str]:
        """One etcd member, or a cluster of ``[stack] etcd_members``; and every client URL, comma-joined.

        A cluster's members are supervised like any process: one killed is
        restarted on its data dir and rejoins. Every client (Traefik, the
        backends, the CLI through ``state.json``) gets all the URLs.
        """
        count = self.plan.stack.etcd_members
        data = self.run_dir / "etcd"
        if count == 1 and not (data / cluster.MEMBERS_FILE).exists():
            url = f"http://{HOST}:{ports.etcd}"
            self.checks["etcd"] = lambda: procs.etcd_ok(url, timeout=0.5)
            return Part("etcd", lambda: [self._track(procs.start_etcd(
                data, ports.etcd, ports.etcd_peer, log_path=logs / "etcd.log", wait=False))],
                checks=[(f"etcd ({url})", self.checks["etcd"])], describe=lambda: url), url
        try:
            self.etcd_members = cluster.stack_members(data, count, ports.etcd, ports.etcd_peer)
        except ValueError as exc:
            raise StackError(str(exc)) from None
        urls = [m.url for m in self.etcd_members]
        checks = []
        for member in self.etcd_members:
            self.checks[member.name] = lambda url=member.url: cluster.healthy(url, timeout=0.5)
            checks.append((f"{member.name} ({member.url})", self.checks[member.name]))

        def start() -> list[procs.Proc]:
            started: list[procs.Proc] = []
            try:
                cluster.start_members(self.etcd_members, data, logs, started)
            finally:
                for proc in started:
                    self._track(proc)
            return started

        return Part("etcd", start, checks=checks,
                    describe=lambda: f"{count} members: {' '.join(urls)}"), ",".join(urls)

    def _redis_part(self, ports: Ports, logs: Path, password: str) -> Part:
        """Redis: Socket.IO's message queue between the backends' processes."""
        self.checks["redis"] = lambda: procs.redis_ping(ports.redis, 0.5, password=password)
        return Part("redis", lambda: [self._track(procs.start_redis(
            ports.redis, self.run_dir / "redis", log_path=logs / "redis.log", password=password, wait=False))],
            checks=[(f"redis ({procs.redis_url(ports.redis)})", self.checks["redis"])],
            describe=lambda: procs.redis_url(ports.redis))

    def _data_part(self, etcd_url: str, linked: list[str]) -> Part:
        """Schemas upgraded and data linked (strangler.stack.data), in a thread, before the backends using it."""
        part = Part("data", describe=lambda: f"{', '.join(linked)} linked")
        # its own etcd client: the polling loop's is used meanwhile
        part.background = lambda: link_services(self.plan, Etcd(etcd_url), linked, part.say)
        return part

    def _routes_part(self, etcd_url: str) -> Part:
        """The route table made to match the plan, in a thread (see :meth:`_write_routes`)."""
        part = Part("routes", needs=["etcd"], describe=lambda: "the plan's")
        part.background = lambda: self._write_routes(Etcd(etcd_url), part.say)
        return part

    def _traefik_part(self, ports: Ports, logs: Path, etcd_url: str) -> Part:
        """Traefik, once the route table is written (so its first read routes the plan's prefixes)."""
        config = static_config(
            web_port=ports.web, api_port=ports.dashboard, etcd_endpoints=etcd_url.split(","),
            access_log_path=str(logs / "traefik-access.log"), host=HOST, internal_port=ports.internal)
        path = write_static_config(self.run_dir / "traefik.yml", config)
        url = f"http://{HOST}:{ports.dashboard}"
        self.checks["traefik"] = lambda: procs.traefik_ok(url, timeout=0.5)
        return Part("traefik", lambda: [self._track(procs.start_traefik(
            path, log_path=logs / "traefik.log", wait=False))],
            checks=[(f"traefik ({url})", self.checks["traefik"])], needs=["routes"], describe=lambda: url)

    def _backend_part(self, launch: Launch, web: str, linked: Sequence[str]) -> Part:
        """One backend instance: healthy directly, registered in etcd, and served by Traefik.

        It needs Redis (every backend may use Socket.IO's queue) and, when it
        uses linked data (the monolith, a linked service), the data links.
        Only the monolith's failure ends the start: another backend that ends
        while starting is the supervisor's to restart (or mark crashlooping).
        """
        uses_data = bool(linked) and (launch.backend == self.plan.monolith or launch.backend in linked)
        health = launch.url + launch.health_path
        return Part(
            launch.name, lambda: [self.start_instance(launch)],
            checks=[(f"{launch.name} ({health})", lambda: procs.http_ok(health, timeout=0.5)),
                    (f"{launch.name}'s registration in etcd", lambda: self._registered(launch)),
                    (f"Traefik routing to {launch.name}", lambda: self._routed(launch, web))],
            needs=["redis", *(["data"] if uses_data else [])],
            optional=launch.backend != self.plan.monolith, describe=lambda: launch.url)

    def _console_part(self, port: int, etcd_url: str, traefik_url: str) -> Part:
        """The console (strangler console), on loopback, a managed process like the backends."""
        from strangler.console.cli import console_argv, console_env

        env = console_env(run_dir=self.run_dir, plan=self.plan.path, etcd=etcd_url, traefik_api=traefik_url)
        url = f"http://{HOST}:{port}"
        self.state["console"] = url + "/"
        proc = procs.Proc("console", console_argv(HOST, port), self.run_dir / "logs" / "console.log",
                          env=env, url=url)
        return Part("console", lambda: [self._track(proc.start())],
                    checks=[(f"console ({url})", lambda: procs.http_ok(url + "/healthz", timeout=0.5))],
                    describe=lambda: url)

    def _start_followers(self, linked: Sequence[str]) -> None:
        """One sync follower per linked service (both directions), a managed process like the rest."""
        for service in linked:
            name, argv, env = follower_command(self.plan, service)
            proc = procs.Proc(name, argv, self.run_dir / "logs" / f"{name}.log", env=env,
                              cwd=str(self.plan.path.parent if self.plan.path else Path.cwd()))
            self._track(proc.start())

    def _start_controller(self, etcd_url: str, traefik_url: str) -> None:
        """The promotion controller (strangler.promote.controller), a managed process like the followers."""
        argv = [sys.executable, "-m", "strangler.promote", "--etcd", etcd_url,
                "--traefik-metrics", traefik_url, "--shadow-store", str(self.run_dir / "shadow.sqlite")]
        proc = procs.Proc("controller", argv, self.run_dir / "logs" / "controller.log",
                          cwd=str(self.plan.path.parent if self.plan.path else Path.cwd()))
        self._track(proc.start())

    def _write_routes(self, client: Etcd, echo: Echo) -> None:
        """Make the route table match the plan (keeping earlier flips) before Traefik reads it.

        The same change as ``strangler plan apply --keep-live``, so the first
        table already routes the plan's prefixes (Socket.IO, static files) and
        health checks, and starting a stack never moves a live route: ones
        the plan would move are named, for ``plan apply --yes``.
        """
        from strangler.routing.apply import apply_plan

        held = apply_plan(client, self.plan, moves="keep").moves
        if held:
            echo(f"kept {len(held)} live route(s) the plan would move "
                 f"(strangler plan apply --yes moves them): {'; '.join(held)}")
        seed_root_key(client)

    def start_instance(self, launch: Launch) -> procs.Proc:
        """Start one backend instance and record it (pid file, state.json's backends); no waiting."""
        private_dir(self.run_dir / "data")
        proc = procs.Proc(launch.name, _resolve_argv(launch.argv), launch.log_path,
                          env=launch.env, cwd=launch.cwd, url=launch.url)
        self.launches[launch.name] = launch
        self.checks[launch.name] = lambda: self._instance_ready(launch)
        self._track(proc.start())
        self.state["backends"].setdefault(launch.backend, {"instances": []})["instances"].append(
            {"name": launch.name, "url": launch.url, "pid": proc.pid, "log": str(launch.log_path),
             "release": launch.env.get("STRANGLER_RELEASE", "")})
        return proc

    def forget_instance(self, name: str) -> None:
        """A drained instance is gone for good: drop its pid file and its place in ``state.json``."""
        launch = self.launches.pop(name, None)
        self.procs.pop(name, None)
        self.checks.pop(name, None)
        procs.remove_pidfile(self.run_dir, name)
        if launch is not None:
            info = self.state.get("backends", {}).get(launch.backend, {})
            info["instances"] = [i for i in info.get("instances", []) if i["name"] != name]
        self.write_state()

    def current_release(self, backend: str) -> str | None:
        """The release new instances of ``backend`` get (None: the label of the plan's)."""
        return self.releases.get(backend, (None, {}))[0]

    def current_env(self, backend: str) -> dict[str, str]:
        """The extra environment new instances of ``backend`` get (an upgrade's ``--env``)."""
        return self.releases.get(backend, (None, {}))[1]

    def reconcile(self, supervisor: Any) -> None:
        """Carry out the intents written in etcd (plan changes, then scale; see strangler.stack.replan, .scale)."""
        carry_out(self, supervisor)
        reconcile(self, supervisor)

    def ended(self, name: str) -> None:
        """A process ended unexpectedly: take a backend instance's registration out at once.

        Otherwise Traefik would keep it until the lease runs out (the TTL) or its
        health check notices; the restarted instance registers afresh.
        """
        launch = self.launches.get(name)
        if launch is not None and getattr(self, "client", None) is not None:
            try:
                registry.deregister(self.client, launch.backend, launch.url)
            except EtcdError:
                pass  # etcd itself may be what is restarting: the lease runs out instead

    def health_check(self, name: str) -> Callable[[], bool] | None:
        """How the supervisor tells ``name`` is healthy; None: running a moment is enough."""
        return self.checks.get(name)

    def _instance_ready(self, launch: Launch) -> bool:
        """Answers its health path directly and is registered in etcd."""
        if not procs.http_ok(launch.url + launch.health_path, timeout=0.5):
            return False
        try:
            return any(i.url == launch.url for i in registry.instances(self.client, launch.backend))
        except EtcdError:
            return False

    def _registered(self, launch: Launch) -> bool:
        """``launch`` is registered in etcd (one read per backend per polling round)."""
        key = ("registered", launch.backend)
        if key not in self._seen:
            try:
                self._seen[key] = {i.url for i in registry.instances(self.client, launch.backend)}
            except EtcdError:
                self._seen[key] = set()
        return launch.url in self._seen[key]

    def _routed(self, launch: Launch, web: str) -> bool:
        """Traefik balances over ``launch`` (and finds it UP where it health-checks); the monolith end to end too."""
        key = ("service", launch.backend)
        if key not in self._seen:
            try:
                self._seen[key] = self.api.service(launch.backend) or {}
            except TraefikError:
                self._seen[key] = {}
        service = self._seen[key]
        servers = (service.get("loadBalancer") or {}).get("servers") or []
        if launch.url not in [server.get("url") for server in servers]:
            return False
        # Traefik health-checks only services a router uses (others have no serverStatus)
        if service.get("usedBy") and (service.get("serverStatus") or {}).get(launch.url) != "UP":
            return False
        # the monolith is also checked end to end, through the catch-all
        return launch.backend != self.plan.monolith or procs.http_ok(web + launch.health_path, timeout=0.5)

    def write_state(self) -> None:
        """Write ``state.json`` (what other commands read to find the stack)."""
        write_private(self.run_dir / STATE_FILE, json.dumps(self.state, indent=2))

    def stop(self) -> list[tuple[str, int | None, str]]:
        """Stop what this object started: backends drained first (together), then Traefik, Redis, etcd.

        Returns ``(name, pid, how it ended)`` per process, and forgets the pid files and state.
        """
        client, api = getattr(self, "client", None), getattr(self, "api", None)

        def stop_one(proc: procs.Proc) -> tuple[str, int | None, str]:
            launch = self.launches.get(proc.name)
            if launch is None or not proc.alive():
                return proc.name, proc.pid, proc.stop(timeout=10)
            return proc.name, proc.pid, drain(client, api, launch.backend, launch.url, proc.stop)

        others, core_names = stop_order(self.procs)
        core = [self.procs[name] for name in core_names]
        results = in_parallel([self.procs[name] for name in others], stop_one)
        results += [(p.name, p.pid, p.stop(timeout=10)) for p in core]
        for name, _, outcome in results:
            if outcome != "still running":
                procs.remove_pidfile(self.run_dir, name)
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        (self.run_dir / STATUS_FILE).unlink(missing_ok=True)
        self.procs.clear()
        return results

    def down(self) -> list[tuple[str, int, str]]:
        """Stop the stack running from this run dir (see :func:`down`)."""
        return down(self.run_dir)

    def status(self) -> dict[str, Any]:
        """What ``strangler status`` shows (see :func:`status`)."""
        return status(self.run_dir, self.plan)


def _forget_old_instances(client: Etcd) -> None:
    """Revoke registrations a killed stack left in this (private) etcd.

    etcd keeps leases across its own restart, so without this Traefik would
    balance over dead instances until their TTL ran out again.
    """
    entries, _ = client.get_prefix_entries(registry.instances_prefix())
    for lease_id in {entry.lease for entry in entries.values() if entry.lease}:
        try:
            Lease(client, lease_id, 0).revoke()
        except EtcdError:
            pass  # it expired meanwhile: its keys are gone already


def status(run_dir: Path | str, plan: Plan | None = None) -> dict[str, Any]:
    """What runs from ``run_dir``: processes, backends with their instances, the route summary.

    JSON-ready. ``running`` is False (and little else is filled in) when no
    stack runs. Instances carry ``address``, ``version``, ``age`` (seconds),
    ``healthy`` (answers its health path now) and ``traefik`` (Traefik's view).
    """
    from strangler.stack.status import collect

    return collect(Path(run_dir).resolve(), plan, read_state(Path(run_dir)), running_records(Path(run_dir)))


__all__ = ["PORT_OPTIONS", "Launch", "Stack", "StackError", "backend_launches", "down",
           "read_state", "status"]
