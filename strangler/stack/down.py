"""``strangler down``: stop, by PID, every process a stack started from a run dir, in another process.

The supervisor first (SIGUSR1: it ends without touching the stack, so
nothing is restarted behind ``down``'s back), then every backend instance
drained (see :mod:`strangler.stack.drain`) together with the other
processes, then Traefik, Redis and etcd.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from router.etcd import Etcd
from router.traefik import TraefikAPI
from strangler.stack import procs
from strangler.stack.drain import drain, in_parallel
from strangler.stack.state import STATE_FILE, STATUS_FILE, SUPERVISOR, read_state

CORE = ("etcd", "redis", "traefik")  # start order; stopped in reverse after everything else
MEMBER_PREFIX = "etcd-"  # the other members of an etcd cluster (etcd-2 ...), stopped with etcd


def stop_order(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """PURE: ``names`` as (everything else, then the core in stop order: Traefik, Redis, etcd).

    Every etcd member is core: stopping a cluster's members alongside the
    backends would take quorum away while the backends leave the registry.
    """
    names = list(names)
    members = sorted(n for n in names if n.startswith(MEMBER_PREFIX))
    core = [n for n in ("traefik", "redis", *members, "etcd") if n in names]
    return [n for n in names if n not in core], core


def down(run_dir: Path | str) -> list[tuple[str, int, str]]:
    """Stop, by PID, every process a stack started from ``run_dir``; [] when none runs.

    The supervisor first (so it restarts nothing), then the backends, each
    drained (deregistered, dropped by Traefik, then SIGTERM: gunicorn finishes
    what is in flight), together with the other processes, then Traefik,
    Redis and etcd. Returns ``(name, pid, outcome)``: ``terminated``,
    ``killed``, ``gone`` (had already ended) or ``still running``.
    """
    run_dir = Path(run_dir).resolve()
    results = []
    supervisor = procs.read_pidfiles(run_dir).get(SUPERVISOR)
    if supervisor is not None:
        results.append((supervisor.name, supervisor.pid, stand_down(supervisor)))
        procs.remove_pidfile(run_dir, SUPERVISOR)
    records = procs.read_pidfiles(run_dir)  # again: the supervisor may have restarted one
    state = read_state(run_dir) or {}
    instances = {i["name"]: (backend, i["url"], i.get("service") or backend)
                 for backend, info in state.get("backends", {}).items() for i in info.get("instances", [])}
    client = Etcd(state["etcd"], timeout=2) if state.get("etcd") else None
    api = TraefikAPI(state["traefik_api"], timeout=2) if state.get("traefik_api") else None

    def stop(record: procs.PidRecord) -> tuple[str, int, str]:
        if record.name in instances and record.running():
            backend, url, service = instances[record.name]
            outcome = drain(client, api, backend, url, record.stop, service=service)
        else:
            outcome = record.stop(timeout=10)
        if outcome != "still running":
            procs.remove_pidfile(run_dir, record.name)  # at once: a foreground `up` watches these
        return record.name, record.pid, outcome

    others, core = stop_order(records)
    results += in_parallel([records[name] for name in others], stop)
    results += [stop(records[name]) for name in core]
    if not procs.read_pidfiles(run_dir):
        (run_dir / STATE_FILE).unlink(missing_ok=True)
        (run_dir / STATUS_FILE).unlink(missing_ok=True)
    return results


def stand_down(record: procs.PidRecord) -> str:
    """Ask a supervisor to end without stopping the stack (SIGUSR1); SIGKILL it if it does not."""
    if not record.running():
        return "gone"
    try:
        os.kill(record.pid, signal.SIGUSR1)
    except ProcessLookupError:
        return "gone"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not record.running():
            return "terminated"
        time.sleep(0.05)
    return procs.stop_pid(record.pid, 5, starttime=record.starttime, cmdline=record.cmdline)
