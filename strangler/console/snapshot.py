"""What the console shows, gathered in one JSON-ready dict: ``Snapshots.get()``.

Sources, all read-only: etcd (route table, history, registry, data links),
Traefik's API (through ``strangler.stack.status.collect``, the same code as
``strangler status``) and its Prometheus metrics (:mod:`.traffic`), the
comparator's ``shadow.sqlite`` (``read_report``, as ``strangler diffs``)
and the stack's ``state.json``. Never a backend's database.

The pure functions (``progress``, ``route_rows``, ``history_rows``,
``instance_rows``, ``example_rows``) are tested without a stack.
Gathering costs etcd reads, Traefik API calls and one health probe per
instance, so the result is cached: the routing part (what a flip changes)
for ``fast`` seconds, the rest for ``slow`` seconds, however many pages poll.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from router import table
from router.etcd import Etcd, EtcdError
from router.keys import Route, parse_endpoint
from strangler.compare.diff import Answer, Difference
from strangler.compare.oneoff import Outcome
from strangler.compare.render import body_rows
from strangler.console.traffic import Sampler
from strangler.links import read_links
from strangler.plan import Plan, PlanError, load_plan
from strangler.routing import allowed_backends, plan_backend
from strangler.routing.apply import route_rows as plan_route_rows
from strangler.shadow import DB_NAME
from strangler.shadow.store import read_report
from strangler.stack.state import read_state

# -- pure --------------------------------------------------------------------------------------


def progress(rows: Sequence[Mapping[str, Any]], monolith: str) -> list[dict[str, Any]]:
    """PURE: per owning service, its endpoints: moved (answered by it alone), on a canary, total.

    ``rows`` are routing.apply.route_rows; endpoints the monolith keeps are left out.
    """
    services: dict[str, dict[str, Any]] = {}
    for row in rows:
        owner = row.get("owner")
        if not owner or owner == monolith:
            continue
        entry = services.setdefault(owner, {"service": owner, "moved": 0, "canary": 0, "total": 0})
        entry["total"] += 1
        if row["backend"] == owner and not row["weights"]:
            entry["moved"] += 1
        elif row["weights"] and owner in row["weights"]:
            entry["canary"] += 1
    return list(services.values())


def route_rows(plan: Plan, routes: Mapping[Any, Route], traffic: Mapping[str, dict]) -> list[dict]:
    """PURE: ``strangler routes --json``'s rows, each with its endpoint id and live ``traffic``."""
    rows = plan_route_rows(plan, dict(routes))
    planned = set(plan.endpoints())
    for row in rows:
        endpoint = parse_endpoint(row["endpoint"])
        row["id"] = endpoint.id
        row["traffic"] = traffic.get(endpoint.id)
        # where the page may offer to flip it: the flip guards' own rule
        row["allowed"] = (sorted(plan_backend(plan, b) for b in allowed_backends(plan, endpoint))
                          if endpoint in planned else [])
    return rows


def history_rows(changes: Sequence[table.Change], limit: int = 50) -> list[dict[str, Any]]:
    """PURE: the latest ``limit`` changes, newest first, each saying whether it is still in effect."""
    live = {c.id for c in table.in_effect(changes)}
    return [
        {"id": c.id, "time": c.time, "who": c.who, "what": c.what, "revision": c.revision,
         "rollback_of": c.rollback_of, "in_effect": c.id in live}
        for c in sorted(changes, key=lambda c: c.id, reverse=True)[:limit]
    ]


def instance_rows(backends: Sequence[Mapping[str, Any]], started: Mapping[str, Any],
                  alive: Callable[[int], bool]) -> list[dict[str, Any]]:
    """PURE: ``strangler status``'s backend rows plus the instances ``up`` started that are not registered.

    ``started`` is state.json's ``backends`` (name -> ``instances``: url, pid,
    name, maybe ``restarts``); an instance killed shows as not healthy at
    once (its process is gone), and stays listed after its lease expired.
    """
    rows = []
    for backend in backends:
        ours = {i["url"]: i for i in (started.get(backend["backend"]) or {}).get("instances", [])}
        instances = []
        for inst in backend["instances"]:
            mine = ours.pop(inst["address"], {})
            running = mine.get("pid") is None or alive(int(mine["pid"]))
            instances.append({**inst, "name": mine.get("name"), "restarts": mine.get("restarts", 0),
                              "healthy": inst["healthy"] and running,
                              "state": "registered" if running else "process ended"})
        for url, mine in ours.items():
            running = alive(int(mine.get("pid") or 0))
            instances.append({"id": None, "address": url, "version": "", "pid": mine.get("pid"),
                              "age": None, "healthy": False, "traefik": "gone", "name": mine.get("name"),
                              "restarts": mine.get("restarts", 0),
                              "state": "not registered" if running else "process ended"})
        rows.append({**backend, "instances": instances})
    return rows


def example_rows(example: Mapping[str, Any]) -> list[dict[str, str]]:
    """PURE: a stored shadow example side by side (monolith | candidate), as ``strangler compare`` aligns it.

    Each row: ``mark`` (``≠`` a real difference, ``~`` ignored, ``""`` same),
    ``left`` and ``right`` (a line each, "" where a side has none).
    """
    def answer(side: Mapping[str, Any]) -> Answer:
        return Answer(int(side.get("status") or 0), dict(side.get("headers") or {}),
                      str(side.get("body") or "").encode())

    found = [Difference(**{k: d.get(k) for k in Difference._fields}) for d in example.get("differences", [])]
    outcome = Outcome(None, answer(example.get("monolith") or {}), answer(example.get("candidate") or {}),
                      found, [])
    return [{"mark": mark, "left": left.plain, "right": right.plain}
            for mark, left, right in body_rows(outcome)]


# -- I/O ---------------------------------------------------------------------------------------


class Sources:
    """Where to read: the run dir (state.json, shadow.sqlite), the plan file, etcd, Traefik."""

    def __init__(self, run_dir: Path, plan_path: Path | None = None, etcd_url: str | None = None,
                 traefik_url: str | None = None) -> None:
        self.run_dir = Path(run_dir).resolve()
        self._plan_path = plan_path
        self._etcd_url = etcd_url
        self._traefik_url = traefik_url
        self._plan: tuple[float, Path, Plan] | None = None
        self._etcd: Etcd | None = None
        self.sampler: Sampler | None = None

    def state(self) -> dict[str, Any]:
        """The stack's state.json ({} while none is written)."""
        return read_state(self.run_dir) or {}

    def plan(self) -> Plan:
        """The plan, re-read when its file changes; PlanError when there is none to read."""
        path = self._plan_path or Path(self.state().get("plan") or self.run_dir.parent / "strangler.toml")
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise PlanError(f"no plan at {path}; pass --plan or set STRANGLER_PLAN") from None
        if self._plan is None or self._plan[:2] != (mtime, path):
            self._plan = (mtime, path, load_plan(path))
        return self._plan[2]

    def etcd_url(self) -> str:
        """etcd's URL: given, else the stack's."""
        url = self._etcd_url or self.state().get("etcd")
        if not url:
            raise EtcdError(f"no stack runs from {self.run_dir}; start one with `strangler up`")
        return url

    def etcd(self) -> Etcd:
        """One shared client (thread-safe)."""
        if self._etcd is None or self._etcd.url != self.etcd_url():
            self._etcd = Etcd(self.etcd_url(), timeout=2)
        return self._etcd

    def traefik_url(self) -> str | None:
        """Traefik's API (and metrics) URL: given, else the stack's."""
        return self._traefik_url or self.state().get("traefik_api")

    def traffic(self) -> tuple[dict[str, dict], str | None]:
        """Per router the last minute's figures, and why there are none (or None)."""
        url = self.traefik_url()
        if not url:
            return {}, None
        if self.sampler is None or not self.sampler.url.startswith(url):
            self.sampler = Sampler(url)
        self.sampler.scrape()
        return self.sampler.figures(), self.sampler.error


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's: it runs
    return True


class Snapshots:
    """Builds the page's data from ``sources``, cached (routing part ``fast`` s, the rest ``slow`` s)."""

    def __init__(self, sources: Sources, *, fast: float = 0.5, slow: float = 2.0) -> None:
        self.sources = sources
        self.fast, self.slow = fast, slow
        self._lock = threading.Lock()
        self._routing: tuple[float, dict] | None = None
        self._rest: tuple[float, dict] | None = None
        self.builds = 0  # how many times anything was gathered (the metrics count it)

    def invalidate(self) -> None:
        """Forget the cache (after an action, so the page shows its result at once)."""
        with self._lock:
            self._routing = None

    def get(self) -> dict[str, Any]:
        """The whole snapshot (cached parts merged), JSON-ready."""
        with self._lock:
            now = time.monotonic()
            if self._routing is None or now - self._routing[0] > self.fast:
                self._routing = (now, self._gather_routing())
                self.builds += 1
            if self._rest is None or now - self._rest[0] > self.slow:
                self._rest = (now, self._gather_rest())
            routing, rest = self._routing[1], self._rest[1]
        return {**rest, **routing, "problems": rest["problems"] + routing["problems"], "time": time.time()}

    def _gather_routing(self) -> dict[str, Any]:
        out: dict[str, Any] = {"routes": [], "progress": [], "history": [], "problems": [],
                               "strategy": None, "monolith": None}
        try:
            plan = self.sources.plan()
        except PlanError as exc:
            out["problems"].append(str(exc))
            return out
        out["strategy"], out["monolith"] = plan.strategy, plan.monolith
        out["backends_planned"] = [n for n, b in plan.backends.items() if not b.is_monolith]
        traffic, why = self.sources.traffic()
        if why:
            out["problems"].append(why)
        try:
            etcd = self.sources.etcd()
            routes, _ = table.load(etcd)
            changes = table.history(etcd)
        except EtcdError as exc:
            out["problems"].append(f"etcd unreachable: {exc}")
            return out
        out["routes"] = route_rows(plan, routes, traffic)
        out["progress"] = progress(out["routes"], plan.monolith)
        out["history"] = history_rows(changes)
        return out

    def _gather_rest(self) -> dict[str, Any]:
        from strangler.stack.lifecycle import running_records
        from strangler.stack.status import collect

        run_dir = self.sources.run_dir
        state = self.sources.state()
        try:
            plan: Plan | None = self.sources.plan()
        except PlanError:
            plan = None
        status = collect(run_dir, plan, state, running_records(run_dir))
        links: dict[str, Any] = {}
        try:
            links = {name: {k: v for k, v in link.items() if k in ("rows", "linked_at", "tables")}
                     for name, link in read_links(self.sources.etcd()).items()}
        except EtcdError as exc:
            status["problems"].append(f"etcd unreachable: {exc}")
        diffs = read_report(run_dir / DB_NAME, examples=3)
        for entry in diffs:
            for example in entry["examples"]:
                example["rows"] = example_rows(example)
        return {
            "stack": {k: state.get(k) for k in ("web", "dashboard", "console", "started", "run_dir")},
            "running": status["running"],
            "instances": instance_rows(status["backends"], state.get("backends") or {}, _pid_alive),
            "data": status["data"],
            "links": links,
            "write_through": status["write_through"],
            "diffs": diffs,
            "problems": list(status["problems"]),
        }

