"""Retiring the monolith: the last step of a migration, and its undoing.

``strangler retire`` records ``strangler/stack/retired`` in etcd (JSON: who,
when, the request count it saw, the tables it verified) once the monolith
serves none of the plan's endpoints or prefixes. "Served by the monolith"
means a route in the table whose backends (answering, canary weights, A/B
match, shadow mirror) include the monolith, except two that never move: the
catch-all router (it answers only paths no endpoint of the plan covers) and
the route of the monolith's own health path (``GET /healthz``), which goes
away with it.

The request count comes from Traefik's router metrics
(``traefik_router_requests_total``, one series per router and service): the
monolith's requests through every router but its health path's are counted,
so health checks sent through Traefik are told apart by their router.
Traefik's own active health checks go straight to the servers and are not
counted at all. While the key exists:

- the supervisor stops the sync followers and does not restart them
  (:func:`enforce`), and ``up`` neither links data nor starts the monolith;
- the monolith's scale intent is 0 (written by ``retire``, the one path
  allowed to do it while the catch-all still points at the monolith);
- the linked services run with ``STRANGLER_WRITE_THROUGH`` empty (a rolling
  upgrade), so their databases are the source of truth.

``strangler unretire`` deletes the key after catching the monolith's
database up (strangler.stack.data.link_service), and undoes the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from router.etcd import Etcd, EtcdError
from router.keys import MONOLITH, Endpoint, Route
from strangler.plan import Plan
from strangler.stack import procs

RETIRED_KEY = "strangler/stack/retired"
ROUTER_REQUESTS = "traefik_router_requests_total"
WRITE_THROUGH_OFF = {"STRANGLER_WRITE_THROUGH": ""}  # empty: write-through off (datalink.writethrough)
MAX_WINDOW = 24 * 3600
_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)([smh]?)$")


def parse_window(text: str) -> float:
    """PURE: ``"10m"`` -> 600.0 seconds (s, m or h; a bare number is seconds); ValueError otherwise."""
    match = _WINDOW.match(text.strip())
    if not match:
        raise ValueError(f"{text!r}: write a duration such as 30s, 10m or 1h")
    seconds = float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]
    if not 1 <= seconds <= MAX_WINDOW:
        raise ValueError(f"{text!r}: the window must be between 1s and 24h")
    return seconds


def health_endpoint(plan: Plan) -> Endpoint:
    """PURE: the monolith's health path as an endpoint (``GET /healthz``)."""
    return Endpoint("GET", plan.backends[plan.monolith].health)


def served_by_monolith(routes: Iterable[Route], health: Endpoint) -> list[str]:
    """PURE: the plan's endpoints and prefixes the monolith still answers (any share), sorted.

    The catch-all is not a route of the table; ``health`` (the monolith's own
    health path) is left out: both stay with the monolith for good.
    """
    return sorted(str(route.endpoint) for route in routes
                  if MONOLITH in route.backends and route.endpoint != health)


def router_requests(text: str, service: str) -> dict[str, float]:
    """PURE: ``traefik_router_requests_total`` of Traefik ``service``, summed per router (no @provider)."""
    from strangler.promote.metrics import _LABEL, _LINE

    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(ROUTER_REQUESTS):
            continue
        match = _LINE.match(line)
        if not match or match["name"] != ROUTER_REQUESTS:
            continue
        labels = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"] or "")}
        if labels.get("service", "").partition("@")[0] != service:
            continue
        router = labels.get("router", "").partition("@")[0]
        try:
            found[router] = found.get(router, 0.0) + float(match["value"])
        except ValueError:
            continue
    return found


def requests_besides(before: dict[str, float], after: dict[str, float], skip: str) -> int | None:
    """PURE: requests between two reads of :func:`router_requests`, router ``skip`` left out.

    None when a counter went down (Traefik restarted: the window is unknown).
    """
    deltas = {r: after.get(r, 0.0) - before.get(r, 0.0) for r in set(before) | set(after)}
    if any(n < 0 for n in deltas.values()):
        return None
    return round(sum(n for r, n in deltas.items() if r != skip))


def read_metrics(url: str, timeout: float = 2.0) -> str:
    """Traefik's Prometheus text at ``<url>/metrics``; MetricsError (one line) otherwise."""
    import requests

    from strangler.promote.metrics import MetricsError

    try:
        answer = requests.get(url.rstrip("/") + "/metrics", timeout=timeout)
    except requests.RequestException as exc:
        raise MetricsError(f"Traefik's metrics at {url}/metrics unreachable: {exc.__class__.__name__}") from None
    if answer.status_code != 200:
        raise MetricsError(f"Traefik's metrics at {url}/metrics answered {answer.status_code}")
    return answer.text


def read_retired(etcd: Etcd) -> dict[str, Any] | None:
    """The retirement record, or None when the monolith is not retired."""
    value = etcd.get(RETIRED_KEY)
    if not value:
        return None
    try:
        record = json.loads(value)
    except ValueError:
        return {"note": value}
    return record if isinstance(record, dict) else {"note": value}


def database_exists(url: str | None) -> str | None:
    """None when the database at ``url`` can be opened; otherwise one line saying why not.

    A SQLite file must exist already (opening it would create an empty one).
    """
    if not url:
        return "the monolith has no database in the plan"
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        return None if path and Path(path).is_file() else f"its SQLite file {path} is gone"
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    from datalink.tables import display_url

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"{display_url(url)} cannot be opened: {str(exc).splitlines()[0][:200]}"
    finally:
        engine.dispose()
    return None


# ---- the supervisor's side ------------------------------------------------------------------


def enforce(stack: Any, supervisor: Any) -> None:
    """Keep the followers in line with the retirement record (called from the supervisor's loop).

    Retired: the followers are stopped and forgotten (never restarted).
    Not retired: every linked service in etcd has its follower running, and
    new instances get write-through for it (after ``unretire``, or an ``up``
    of a retired stack).
    """
    try:
        retired = read_retired(getattr(stack, "reads", stack.client)) is not None
        links = None if retired else _linked(stack)
    except EtcdError:
        return
    if retired:
        for name in [n for n in list(supervisor.watched) if n.startswith("sync-")]:
            with supervisor.lock:
                watched = supervisor.watched.get(name)
                if watched is None:
                    continue
                supervisor.forget(name)
            watched.proc.stop(timeout=10)
            stack.procs.pop(name, None)
            procs.remove_pidfile(stack.run_dir, name)
            stack.state.get("data", {}).pop(name.removeprefix("sync-"), None)
            stack.write_state()
            supervisor.echo(f"{name} stopped: the monolith is retired")
        return
    missing = [s for s in links if f"sync-{s}" not in supervisor.watched]
    if not missing:
        return
    from strangler.stack.data import data_state, follower_proc

    stack.launch_args["linked"] = sorted({*stack.launch_args.get("linked", ()), *links})
    for service in missing:
        proc, metrics = follower_proc(stack.plan, stack.run_dir, service)
        name = proc.name
        with supervisor.lock:
            stack.launch(proc)
            supervisor.watch(proc)
        stack.state.setdefault("data", {}).update(data_state(stack.plan, [service]))
        stack.state["data"][service]["metrics"] = metrics
        stack.write_state()
        supervisor.echo(f"{name} started (pid {proc.pid}): the monolith is back")


def _linked(stack: Any) -> list[str]:
    """The data services the stack starts whose link is recorded in etcd."""
    from strangler.links import is_linked, read_links

    plan: Plan = stack.plan
    links = read_links(getattr(stack, "reads", stack.client))
    return [s for s in plan.data_services() if plan.backend(s).start and is_linked(plan, s, links)]
