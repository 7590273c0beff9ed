"""What ``strangler status`` shows, gathered from the run dir, etcd and Traefik's API.

``collect`` does the I/O; ``route_summary`` and ``backend_rows`` are pure, so
the shapes are tested without a stack.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from router import registry, table
from router.etcd import Etcd, EtcdError
from router.keys import MONOLITH, Route
from router.traefik import TraefikAPI, TraefikError
from strangler.plan import Plan
from strangler.stack import procs
from strangler.stack.launch import write_through_reports
from strangler.stack.retire import read_retired
from strangler.stack.state import SUPERVISOR
from strangler.stack.state import read_status as read_supervised


def route_summary(routes: Iterable[Route], monolith: str = MONOLITH) -> list[dict[str, Any]]:
    """PURE: endpoints per (backend, state), e.g. ``{"backend": "users", "state": "canary", "endpoints": 2}``.

    A canary or shadow counts for the service it moves traffic towards.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for route in routes:
        others = sorted(route.backends - {MONOLITH})
        backend = others[0] if route.state in ("canary", "shadow") and others else route.backend
        counts[(monolith if backend == MONOLITH else backend, route.state)] += 1
    return [{"backend": b, "state": s, "endpoints": n} for (b, s), n in sorted(counts.items())]


def backend_rows(
    plan_backends: Mapping[str, bool],
    instances: Iterable[registry.Instance],
    health: Mapping[str, bool],
    traefik: Mapping[str, Mapping[str, str]],
    now: float,
    supervised: Mapping[str, Mapping[str, Any]] | None = None,
    live: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """PURE: one row per backend (the plan's, in order, then any other that registered).

    ``plan_backends`` maps name -> started by ``up``; ``health`` maps instance
    id -> answered its health path; ``traefik`` maps backend -> Traefik's
    ``serverStatus`` (url -> UP/DOWN); ``supervised`` is the supervisor's
    view (``supervisor.json``: process name -> backend, url, pid, release,
    state, restarts, last_exit). An instance the supervisor runs but that
    is not registered (starting, crashlooping) gets a row too, with
    ``registered`` false. ``traefik`` is keyed by Traefik service; ``live``
    maps a backend to the service its routers point at when that is not its
    own name. Each instance says its ``service`` and ``set``: ``live``, or
    ``standby`` (a blue/green's other set).
    """
    by_url = {(p.get("backend"), p.get("url")): p for p in (supervised or {}).values() if p.get("backend")}
    by_backend: dict[str, list[registry.Instance]] = {}
    for instance in instances:
        by_backend.setdefault(instance.backend, []).append(instance)
    rows = []
    for name in [*plan_backends, *sorted(set(by_backend) - set(plan_backends))]:
        found = by_backend.get(name, [])
        registered = {i.url for i in found}
        unregistered = [p for (b, url), p in sorted(by_url.items(), key=lambda kv: kv[1]["name"])
                        if b == name and url not in registered]
        if not plan_backends.get(name, True) and not found and not unregistered:
            state = "not started"
        elif not found:
            state = "no instances"
        else:
            up = sum(1 for i in found if health.get(i.instance_id))
            state = f"{up}/{len(found)} healthy"
        instances = []
        on = (live or {}).get(name, name)

        def role(service: str, on: str = on) -> str:
            return "live" if service == on else "standby"

        for i in found:
            seen = by_url.get((name, i.url), {})
            instances.append({
                "id": i.instance_id,
                "name": seen.get("name"),
                "address": i.url,
                "version": i.version,
                "release": i.release or seen.get("release", ""),
                "pid": i.pid,
                "age": round(now - i.started, 1) if i.started else None,
                "healthy": bool(health.get(i.instance_id)),
                "registered": True,
                "service": i.traefik_service,
                "set": role(i.traefik_service),
                "traefik": traefik.get(i.traefik_service, {}).get(i.url, "unknown"),
                "state": seen.get("state", "healthy" if health.get(i.instance_id) else "starting"),
                "restarts": seen.get("restarts", 0),
                "last_exit": seen.get("last_exit"),
            })
        for seen in unregistered:
            service = seen.get("service") or name
            instances.append({
                "id": None, "name": seen["name"], "address": seen["url"], "version": "",
                "release": seen.get("release", ""), "pid": seen.get("pid"), "age": None,
                "healthy": False, "registered": False, "service": service, "set": role(service),
                "traefik": traefik.get(service, {}).get(seen["url"], "unknown"),
                "state": seen.get("state", "starting"), "restarts": seen.get("restarts", 0),
                "last_exit": seen.get("last_exit"), "last_lines": seen.get("last_lines", ""),
            })
        rows.append({"backend": name, "state": state, "instances": instances})
    return rows


def data_rows(
    data: Mapping[str, Mapping[str, Any]],
    passes: Mapping[str, Mapping[str, Any] | None],
    live: Iterable[str],
    now: float,
) -> list[dict[str, Any]]:
    """PURE: one row per linked service and sync direction, for the "data" part of status.

    ``data`` is state.json's ``data`` (service -> tables, follower, directions
    with their state file); ``passes`` maps a state file to its last pass
    (``started_at``, ``lag``, ``applied``, ``collisions``, maybe ``error``), None if none ran
    yet; ``live`` names the processes still running. ``lag`` is how late the
    last pass's changes landed; ``last_pass_age`` how long ago that pass
    started (it grows when the follower stops or fails); ``collisions`` how
    many ids of the direction's target hold a row moved aside there
    (datalink.collisions).
    """
    running = set(live)
    rows = []
    for service, info in data.items():
        for direction in info.get("directions", []):
            last = passes.get(direction["state"]) or {}
            started = last.get("started_at")
            rows.append({
                "service": service,
                "direction": direction["name"],
                "tables": list(info.get("tables", [])),
                "follower": "running" if info.get("follower") in running else "stopped",
                "lag": round(last["lag"], 2) if "lag" in last else None,
                "last_pass_age": round(max(0.0, now - started), 1) if started else None,
                "applied": last.get("applied"),
                "error": last.get("error"),
                "collisions": last.get("collisions", 0),
                "notes": list(last.get("notes", [])),
            })
    return rows


def write_through_rows(reports: Path, alive: Callable[[int], bool]) -> list[dict[str, Any]]:
    """One row per backend instance whose processes write through: figures summed over live pids.

    Each process leaves ``<reports>/<backend>.<instance>/<pid>.json`` (see
    datalink.writethrough); files of processes gone are skipped.
    """
    rows = []
    for folder in sorted(p for p in Path(reports).glob("*") if p.is_dir()):
        total: dict[str, int] = {}
        last, notes = None, []
        for path in folder.glob("*.json"):
            try:
                report = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not alive(int(report.get("pid", 0))):
                continue
            for key, value in report.get("stats", {}).items():
                total[key] = total.get(key, 0) + int(value)
            if report.get("last_error") and (last is None or report["last_error_at"] > last[1]):
                last = (report["last_error"], report["last_error_at"])
            notes.extend(n for n in report.get("notes", []) if n not in notes)
        if total:
            backend, _, instance = folder.name.rpartition(".")
            rows.append({"backend": backend, "instance": instance, **total,
                         "last_error": last[0] if last else None, "notes": notes})
    return rows


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_passes(data: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Each direction's last pass, read from its watermark file (see strangler.migrate.sync)."""
    from datalink.tables import MigrateError
    from strangler.migrate.sync import SyncState

    found: dict[str, dict[str, Any] | None] = {}
    for info in data.values():
        for direction in info.get("directions", []):
            try:
                found[direction["state"]] = SyncState.load(direction["state"]).last_pass or None
            except MigrateError:
                found[direction["state"]] = None
    return found


def traefik_view(service: Mapping[str, Any]) -> dict[str, str]:
    """PURE: url -> what Traefik's API says of each server of one service.

    ``UP``/``DOWN`` from its health check; ``unused`` for a server Traefik
    knows but does not health-check, because no router uses its service yet.
    """
    servers = (service.get("loadBalancer") or {}).get("servers") or []
    view = {server["url"]: "unused" for server in servers if "url" in server}
    return view | dict(service.get("serverStatus") or {})


def _probe_all(instances: list[registry.Instance]) -> dict[str, bool]:
    results: dict[str, bool] = {}

    def run(instance: registry.Instance) -> None:
        results[instance.instance_id] = registry.probe(instance, 1.0)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2.0)
    return results


def _etcd_members(state: Mapping[str, Any], live: Mapping[str, procs.PidRecord]) -> list[dict[str, Any]]:
    """Per member of a cluster: name, pid, client URL, healthy, leader ([] for a single etcd)."""
    from strangler.stack import cluster

    members = [cluster.Member.from_dict(m) for m in state.get("etcd_members", [])]
    rows = cluster.members_status(members, timeout=1.0) if members else []
    for row in rows:
        record = live.get(row["name"])
        row["pid"] = record.pid if record else None
    return rows


def collect(
    run_dir: Path,
    plan: Plan | None,
    state: Mapping[str, Any] | None,
    live: Mapping[str, procs.PidRecord],
) -> dict[str, Any]:
    """Everything ``strangler status`` prints, JSON-ready (see ``strangler.stack.status``)."""
    supervised = read_supervised(run_dir)
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "running": bool(state) and "etcd" in live,
        "supervised": SUPERVISOR in live,
        "strategy": plan.strategy if plan else (state or {}).get("strategy"),
        "processes": [
            {"name": r.name, "pid": r.pid, "running": r.name in live, "log": r.log_path,
             **{k: supervised.get(r.name, {}).get(k) for k in ("state", "restarts", "last_exit")}}
            for r in procs.read_pidfiles(run_dir).values()
        ],
        "backends": [],
        "routes": [],
        "data": [],
        "write_through": [],
        "problems": [],
    }
    if not result["running"]:
        return result
    result.update({k: state[k] for k in ("web", "dashboard", "console", "etcd", "traefik_api", "redis", "started")
                   if k in state})
    result["etcd_members"] = _etcd_members(state, live)
    planned = ({n: b.start for n, b in plan.backends.items()} if plan
               else {n: True for n in state.get("backends", {})})
    monolith = plan.monolith if plan else state.get("monolith", MONOLITH)
    try:
        etcd = Etcd(state["etcd"], timeout=2)
        found = registry.instances(etcd)
        routes, _ = table.load(etcd)
        live_sets = {name: services[0] for name, services in table.load_options(etcd).sets.items()}
        result["retired"] = read_retired(etcd)  # strangler retire: the plan is done
        result["monolith"] = monolith
    except EtcdError as exc:
        result["problems"].append(f"etcd at {state['etcd']} unreachable: {exc}")
        found, routes, live_sets = [], {}, {}
    traefik: dict[str, dict[str, str]] = {}
    api = TraefikAPI(state["traefik_api"], timeout=2)
    try:
        for name in {*planned, *(i.traefik_service for i in found)}:
            traefik[name] = traefik_view(api.service(name) or {})
    except TraefikError as exc:
        result["problems"].append(str(exc))
    result["backends"] = backend_rows(planned, found, _probe_all(found), traefik, time.time(), supervised, live_sets)
    if not result["supervised"]:
        result["problems"].append("no supervisor runs: nothing restarts a process that ends "
                                  "(`strangler down` and `strangler up` again)")
    for name, seen in supervised.items():
        if seen.get("state") == "crashlooping":
            result["problems"].append(f"{name} is crashlooping (last exit code {seen.get('last_exit')}); "
                                      f"read {seen.get('log')}")
    result["routes"] = route_summary(routes.values(), monolith)
    data = state.get("data") or {}
    result["data"] = data_rows(data, _last_passes(data), live, time.time())
    result["write_through"] = write_through_rows(write_through_reports(run_dir), _pid_alive)
    return result
