"""The local platform: etcd, Redis, Traefik and the plan's backends, started and stopped together.

No Click here (``strangler.stack.cli`` drives it). ``Stack.up()`` starts
everything on 127.0.0.1 and waits until each part is healthy, independent
parts together (what each part needs: strangler.stack.parts; the loop that
starts and polls them: strangler.stack.startup); ``stop()`` drains
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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from datalink.files import load_or_create_secrets, private_dir, private_file, write_private
from router import registry
from router.etcd import CachedReads, Etcd, EtcdError, Lease
from router.table import load_options
from router.traefik import (
    TraefikAPI,
    TraefikError,
)
from strangler.plan import Plan
from strangler.stack import cluster, parts, procs, warm
from strangler.stack.data import (
    DataError,
    data_state,
    preload_linking,
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
from strangler.stack.startup import RoundCache, bring_up
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
        self._seen = RoundCache()  # what one polling round read (parts.registered, parts.routed)
        self._lock: IO[str] | None = None
        self.launcher = warm.Launcher()  # started by up(): Python parts are forked from it, warm

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

    def launch(self, proc: procs.Proc) -> procs.Proc:
        """Start ``proc`` (warm when it can be: strangler.stack.warm) and record it (pid file)."""
        proc.launcher = self.launcher
        return self._track(proc.start())

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
        self.launcher.start(logs / "launcher.log", label=str(self.run_dir))  # it imports while etcd starts
        if services_to_link(self.plan):  # while etcd starts, this process would only be polling it
            threading.Thread(target=preload_linking, args=(self.plan,), name="preload", daemon=True).start()
        etcd_part, etcd_url = parts.etcd_part(self, ports, logs)
        bring_up([etcd_part, parts.redis_part(self, ports, logs, redis_password)],
                 timeout=self.timeout, echo=self.echo)
        client = Etcd.connect(etcd_url, wait=5)
        self.client = client
        self.reads = CachedReads(client)  # the supervisor's reads: from etcd again only after a write
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
        # a finished blue/green left a backend's live set under "<backend>-green": start it there
        live = {name: services[0] for name, services in load_options(client).sets.items()}
        launches = backend_launches(self.plan, backend_ports, services=live, **self.launch_args)
        counts = {name: len(ports_) for name, ports_ in backend_ports.items()}
        if retired:
            launches = [launch for launch in launches if launch.backend != self.plan.monolith]
            counts[self.plan.monolith] = 0
            self.echo(f"{self.plan.monolith} is retired: not started (`strangler unretire` brings it back)")
        # the plan's counts are where a fresh stack starts; `strangler scale` changes them
        write_counts(client, counts, who="up")
        for launch in launches:  # state.json lists the backends in the plan's order, however they start
            self.state["backends"].setdefault(launch.backend, {"instances": []})
        rest = [parts.data_part(self, etcd_url, linked)] if linked else []
        rest += [parts.routes_part(self, etcd_url), parts.traefik_part(self, ports, logs, etcd_url)]
        rest += [parts.backend_part(self, launch, web, linked) for launch in launches]
        rest.append(parts.console_part(self, ports.console, etcd_url, traefik_url))
        bring_up(rest, timeout=self.timeout, echo=self.echo, ready=["etcd", "redis"], each_round=self._seen.clear)
        parts.start_followers(self, linked)
        parts.start_controller(self, etcd_url, traefik_url)

    def start_instance(self, launch: Launch) -> procs.Proc:
        """Start one backend instance and record it (pid file, state.json's backends); no waiting."""
        private_dir(self.run_dir / "data")
        proc = procs.Proc(launch.name, _resolve_argv(launch.argv), launch.log_path,
                          env=launch.env, cwd=launch.cwd, url=launch.url)
        self.launches[launch.name] = launch
        self.checks[launch.name] = lambda: self._instance_ready(launch)
        self.launch(proc)
        self.state["backends"].setdefault(launch.backend, {"instances": []})["instances"].append(
            {"name": launch.name, "url": launch.url, "pid": proc.pid, "log": str(launch.log_path),
             "release": launch.env.get("STRANGLER_RELEASE", ""), "service": launch.traefik_service})
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
        """Carry out the intents written in etcd (plan changes, then scale; see strangler.stack.replan, .scale).

        Every pass reads etcd's revision once; the intents themselves are read
        again only after a write (an idle stack's supervisor: one request a pass).
        """
        self.reads.check()
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
            return proc.name, proc.pid, drain(client, api, launch.backend, launch.url, proc.stop,
                                              service=launch.traefik_service)

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
        self.launcher.close()
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
