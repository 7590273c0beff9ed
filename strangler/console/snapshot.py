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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import requests.adapters

from router import registry, table
from router.etcd import Etcd, EtcdError
from router.keys import Route, parse_endpoint
from strangler.compare.diff import Answer, Difference
from strangler.compare.oneoff import Outcome
from strangler.compare.render import body_rows
from strangler.console.traffic import Sampler
from strangler.links import read_links
from strangler.plan import Plan, PlanError, load_plan
from strangler.promote.records import all_promotions
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


def answering(plan: Plan, answered: Mapping[str, float]) -> dict[str, float]:
    """PURE: requests/s each plan backend answered over the last minute (where traffic is now).

    ``answered`` is per Traefik service; composite ones (canary, shadow) and
    mirror targets that own no endpoint (the comparator's copies) are left out.
    """
    owners = {plan.monolith} | {plan.owner(e) for e in plan.endpoints()}  # Traefik names them as the plan does
    return {name: answered[name] for name in sorted(owners) if answered.get(name)}


def history_rows(changes: Sequence[table.Change], limit: int = 50) -> list[dict[str, Any]]:
    """PURE: the latest ``limit`` changes, newest first, each saying whether it is still in effect."""
    live = {c.id for c in table.in_effect(changes)}
    return [
        {"id": c.id, "time": c.time, "who": c.who, "what": c.what, "revision": c.revision,
         "rollback_of": c.rollback_of, "in_effect": c.id in live}
        for c in sorted(changes, key=lambda c: c.id, reverse=True)[:limit]
    ]


def promotion_rows(promotions: Sequence[Any], limit: int = 10) -> list[dict[str, Any]]:
    """PURE: the running promotions and the latest ended ones (``limit`` in all), newest first.

    Each: id, endpoints, target, mode, state (running / promoted / rolled
    back), ``step`` (the candidate's share now, "shadow" for a shadow-first
    step), who started it, who aborted it, and its last log line.
    """
    ordered = sorted(promotions, key=lambda p: (p.state != "running", -p.id))[:limit]
    return [{"id": p.id, "endpoints": list(p.endpoints), "target": p.target, "mode": p.mode,
             "state": p.state, "outcome": p.outcome, "step": "shadow" if p.weight == 0 else f"{p.weight}%",
             "who": p.who, "abort": p.abort, "last": p.log[-1]["line"] if p.log else ""}
            for p in ordered]


def running_promotions(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """PURE: endpoint -> id of the promotion running on it."""
    return {e: row["id"] for row in rows if row["state"] == "running" for e in row["endpoints"]}


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
        # keep-alive connections, and no proxy lookups from the environment: loopback only
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="console-probe")

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

    def traefik_services(self) -> tuple[dict[str, dict], str | None]:
        """Traefik's services by qualified name, in one request, and why there are none (or None)."""
        url = self.traefik_url()
        if not url:
            return {}, None
        try:
            answer = self.http.get(f"{url.rstrip('/')}/api/http/services?per_page=10000", timeout=2)
            answer.raise_for_status()
            return {item["name"]: item for item in answer.json()}, None
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            return {}, f"Traefik's API at {url} unreadable: {exc.__class__.__name__}"

    def probe(self, instances: Sequence[registry.Instance]) -> dict[str, bool]:
        """Instance id -> answered its health path within a second (pooled connections, in parallel)."""
        def one(instance: registry.Instance) -> bool:
            try:
                return self.http.get(instance.health_url, timeout=1.0).ok
            except requests.RequestException:
                return False

        return dict(zip([i.instance_id for i in instances], self.pool.map(one, instances), strict=True))

    def traffic(self) -> tuple[dict[str, dict], dict[str, float], str | None]:
        """Per router the last minute's figures, requests/s per Traefik service, and why none (or None)."""
        url = self.traefik_url()
        if not url:
            return {}, {}, None
        if self.sampler is None or not self.sampler.url.startswith(url):
            self.sampler = Sampler(url, session=self.http, every=2.0)
        self.sampler.scrape()
        return self.sampler.figures(), self.sampler.answered(), self.sampler.error


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
    """The page's data from ``sources``, kept fresh by a background thread while someone looks.

    The routing part (what a flip changes) is rebuilt every ``fast`` seconds,
    the rest every ``slow`` seconds, while a page asked in the last
    ``idle_after`` seconds; ``get()`` answers from what was built last, so a
    page never waits for a health probe. After an action the routing part is
    rebuilt at once (``invalidate``).
    """

    def __init__(self, sources: Sources, *, fast: float = 0.5, slow: float = 2.0,
                 idle_after: float = 10.0) -> None:
        self.sources = sources
        self.fast, self.slow, self.idle_after = fast, slow, idle_after
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._routing: tuple[float, dict] | None = None
        self._rest: tuple[float, dict] | None = None
        self._asked = 0.0
        # (etcd revision, routes, history, promotion rows) last read
        self._table: tuple[int, dict, list, list] | None = None
        self._thread: threading.Thread | None = None

    def invalidate(self) -> None:
        """Rebuild the routing part now (after an action, so the page shows its result at once)."""
        routing = self._gather_routing()
        with self._lock:
            self._routing = (time.monotonic(), routing)

    def get(self) -> dict[str, Any]:
        """The whole snapshot (both parts merged), JSON-ready; the first call builds it."""
        self._asked = time.monotonic()
        if self._routing is None or self._rest is None:
            with self._lock:
                if self._routing is None:
                    self._routing = (time.monotonic(), self._gather_routing())
                if self._rest is None:
                    self._rest = (time.monotonic(), self._gather_rest())
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._refresh, name="console-refresh", daemon=True)
            self._thread.start()
        self._wake.set()
        routing, rest = self._routing[1], self._rest[1]
        return {**rest, **routing, "problems": rest["problems"] + routing["problems"], "time": time.time()}

    def _refresh(self) -> None:
        """Rebuild the parts when due while pages ask; sleep when nobody does."""
        while True:
            now = time.monotonic()
            if now - self._asked > self.idle_after:
                self._wake.clear()
                self._wake.wait()
                continue
            if self._routing is None or now - self._routing[0] >= self.fast:
                routing = self._gather_routing()
                with self._lock:
                    self._routing = (time.monotonic(), routing)
            if self._rest is None or now - self._rest[0] >= self.slow:
                rest = self._gather_rest()
                with self._lock:
                    self._rest = (time.monotonic(), rest)
            time.sleep(max(0.05, self.fast - (time.monotonic() - now)))

    def _gather_routing(self) -> dict[str, Any]:
        out: dict[str, Any] = {"routes": [], "progress": [], "history": [], "promotions": [],
                               "problems": [], "strategy": None, "monolith": None}
        try:
            plan = self.sources.plan()
        except PlanError as exc:
            out["problems"].append(str(exc))
            return out
        out["strategy"], out["monolith"] = plan.strategy, plan.monolith
        traffic, answered, why = self.sources.traffic()
        if why:
            out["problems"].append(why)
        out["answering"] = answering(plan, answered)
        try:
            etcd = self.sources.etcd()
            revision = etcd.revision()
            if self._table is None or self._table[0] != revision:  # every change moves the revision
                routes, _ = table.load(etcd)
                self._table = (revision, routes, table.history(etcd), promotion_rows(all_promotions(etcd)))
            _, routes, changes, promotions = self._table
        except EtcdError as exc:
            out["problems"].append(f"etcd unreachable: {exc}")
            return out
        out["routes"] = route_rows(plan, routes, traffic)
        out["promotions"] = promotions
        running = running_promotions(promotions)
        for row in out["routes"]:
            row["promotion"] = running.get(row["endpoint"])
        out["progress"] = progress(out["routes"], plan.monolith)
        out["history"] = history_rows(changes)
        return out

    def _gather_rest(self) -> dict[str, Any]:
        """Instances, data, write-through and diffs: ``strangler status``'s pure shapers over cheaper reads.

        One registry read, one Traefik service list, one pooled health probe
        per instance, the followers' watermark files, the comparator's file.
        """
        from strangler.stack.launch import write_through_reports
        from strangler.stack.state import running_records
        from strangler.stack.status import (
            _last_passes,
            backend_rows,
            data_rows,
            traefik_view,
            write_through_rows,
        )

        run_dir, state, problems = self.sources.run_dir, self.sources.state(), []
        try:
            plan: Plan | None = self.sources.plan()
        except PlanError:
            plan = None
        live = running_records(run_dir)
        planned = ({n: b.start for n, b in plan.backends.items()} if plan
                   else {n: True for n in state.get("backends", {})})
        found: list[registry.Instance] = []
        links: dict[str, Any] = {}
        try:
            etcd = self.sources.etcd()
            found = registry.instances(etcd)
            links = {name: {k: v for k, v in link.items() if k in ("rows", "linked_at", "tables")}
                     for name, link in read_links(etcd).items()}
        except EtcdError as exc:
            problems.append(f"etcd unreachable: {exc}")
        services, why = self.sources.traefik_services()
        if why:
            problems.append(why)
        traefik = {name: traefik_view(services.get(f"{name}@etcd") or {}) for name in {*planned, *(
            i.backend for i in found)}}
        backends = backend_rows(planned, found, self.sources.probe(found), traefik, time.time())
        data = state.get("data") or {}
        diffs = read_report(run_dir / DB_NAME, examples=3)
        for entry in diffs:
            for example in entry["examples"]:
                example["rows"] = example_rows(example)
        return {
            "stack": {k: state.get(k) for k in ("web", "dashboard", "console", "started", "run_dir")},
            "running": bool(state) and "etcd" in live,
            "instances": instance_rows(backends, state.get("backends") or {}, _pid_alive),
            "data": data_rows(data, _last_passes(data), live, time.time()),
            "links": links,
            "write_through": write_through_rows(write_through_reports(run_dir), _pid_alive),
            "diffs": diffs,
            "problems": problems,
        }
