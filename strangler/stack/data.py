"""A split stack's data: link each service's tables with the monolith's, and keep them linked.

While endpoints move one at a time, a service's tables live in two
databases — the monolith's and the service's own — and both must hold the
same rows in every routing state (docs/data-consistency.md). ``strangler
up`` does, after etcd and before any backend:

1. **schemas**: upgrade the monolith's database and each data service's to
   head (what the backends would do on start anyway);
2. **link**: a service not linked yet gets its tables copied from the
   monolith's database (``strangler migrate copy``: bulk, idempotent; with
   an empty monolith database both sides are simply empty) and the link is
   recorded in etcd under ``strangler/data/links/<service>``. A service
   already linked gets one sync pass each way instead, to catch up on
   anything written while a peer was down;
3. **write-through**: every backend gets ``STRANGLER_WRITE_THROUGH`` naming
   its peers' databases per table (:func:`write_through`);
4. **followers**: one managed process per linked service syncs both ways
   every half second (:mod:`strangler.stack.follow`), as the safety net.

Only :func:`link_all` does I/O on databases; the routing guards need just
:func:`read_links` (etcd), so this module imports no SQLAlchemy at the top.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from router.etcd import Etcd
from strangler.links import is_linked, link_key, read_links
from strangler.plan import Plan
from strangler.stack import procs

FOLLOW_ENV = "STRANGLER_FOLLOW"
METRICS_BIND_ENV = "STRANGLER_METRICS_BIND"  # HOST:PORT where the follower serves /metrics
FOLLOW_INTERVAL = 0.5  # seconds between a follower's passes
Echo = Callable[[str], None]


class DataError(RuntimeError):
    """A service's data could not be linked: one line saying what to fix (nothing was started)."""


# ---- what the processes get (pure) ---------------------------------------------------------


def id_lanes(plan: Plan, service: str) -> dict[str, list[int]]:
    """PURE: backend -> its id lane ``[offset, stride]`` for *service*'s linked tables.

    The monolith's database hands out odd ids, the service's even ones
    (datalink.ids), so the two never give one id to two rows.
    """
    from datalink.ids import lane_of

    return {plan.monolith: list(lane_of(0)), service: list(lane_of(1))}


def write_through(plan: Plan, linked: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """PURE: backend -> ``{table: {"peers", "identity", "lane"}}`` for ``STRANGLER_WRITE_THROUGH``.

    The monolith writes each linked service's tables through to that
    service's database; each linked service writes its tables through to
    the monolith's. Each side inserts from its own id lane; ``identity``
    is the plan's. Backends with nothing linked are left out.
    """
    monolith_url = plan.database_url(plan.monolith)
    config: dict[str, dict[str, dict[str, Any]]] = {}
    for service in linked:
        lanes = id_lanes(plan, service)
        for table in plan.backend(service).tables:
            for backend, peer in ((plan.monolith, plan.database_url(service)), (service, monolith_url)):
                entry = config.setdefault(backend, {}).setdefault(
                    table, {"peers": [], "identity": list(plan.identity(table)), "lane": lanes[backend]})
                entry["peers"].append(peer)
    return config


def state_paths(run_dir: Path, service: str) -> tuple[Path, Path]:
    """Where the two directions' watermarks live: as ``strangler migrate sync`` keeps them."""
    base = Path(run_dir) / "sync"
    return base / f"{service}-forward.json", base / f"{service}-reverse.json"


def follower_spec(plan: Plan, service: str, interval: float = FOLLOW_INTERVAL) -> dict[str, Any]:
    """PURE: what :mod:`strangler.stack.follow` needs for *service*: both directions, interval."""
    monolith_url, service_url = plan.database_url(plan.monolith), plan.database_url(service)
    forward, reverse = state_paths(plan.run_dir, service)
    return {
        "service": service,
        "tables": list(plan.backend(service).tables),
        "identities": {t: list(i) for t, i in plan.identities(plan.backend(service).tables).items()},
        "interval": interval,
        "directions": [
            {"name": f"{plan.monolith} -> {service}", "source": monolith_url, "target": service_url,
             "labels": [plan.monolith, service], "state": str(forward)},
            {"name": f"{service} -> {plan.monolith}", "source": service_url, "target": monolith_url,
             "labels": [service, plan.monolith], "state": str(reverse)},
        ],
    }


def follower_command(plan: Plan, service: str, metrics_port: int = 0) -> tuple[str, list[str], dict[str, str]]:
    """PURE: ``(process name, argv, env)`` of *service*'s follower; database URLs travel in env.

    (In the environment rather than argv: ``ps`` shows argv, and URLs may hold passwords.)
    With ``metrics_port`` it serves its Prometheus metrics on that loopback port.
    """
    spec = follower_spec(plan, service)
    env = {FOLLOW_ENV: json.dumps(spec)}
    if metrics_port:
        env[METRICS_BIND_ENV] = f"127.0.0.1:{metrics_port}"
    return f"sync-{service}", [sys.executable, "-m", "strangler.stack.follow"], env


def follower_proc(plan: Plan, run_dir: Path, service: str) -> tuple[procs.Proc, str]:
    """*service*'s follower as a process to start, and the URL of its ``/metrics``.

    The port is free now and kept in the process's environment, so a restart
    by the supervisor serves the same URL; the caller records it in
    ``state.json`` (``data.<service>.metrics``).
    """
    port = procs.free_port()
    name, argv, env = follower_command(plan, service, metrics_port=port)
    proc = procs.Proc(name, argv, Path(run_dir) / "logs" / f"{name}.log", env=env,
                      cwd=str(plan.path.parent if plan.path else Path.cwd()))
    return proc, f"http://127.0.0.1:{port}/metrics"


def data_state(plan: Plan, linked: Iterable[str]) -> dict[str, Any]:
    """PURE: the ``data`` part of ``state.json``: per linked service, its tables and sync directions."""
    out = {}
    for service in linked:
        spec = follower_spec(plan, service)
        out[service] = {
            "tables": spec["tables"],
            "follower": f"sync-{service}",
            "directions": [{"name": d["name"], "state": d["state"]} for d in spec["directions"]],
        }
    return out


# ---- linking (I/O) -------------------------------------------------------------------------


def services_to_link(plan: Plan) -> list[str]:
    """PURE: the data services the stack starts, which ``up`` links with the monolith."""
    return [s for s in plan.data_services() if plan.backend(s).start]


def preload_linking(plan: Plan) -> None:
    """Import what linking needs: alembic, SQLAlchemy, the copy and sync code, the monolith's app module.

    ``up`` runs it in a thread while etcd starts (measured: linking two
    services on fresh SQLite databases then takes 0.17 s instead of 0.5 s
    with only the toolkit's modules warm, and more cold), so the link
    starts warm once etcd answers. The app module (the plan's ``app``,
    ``module:factory``) is what the monolith's alembic environment imports
    for its models.
    """
    import datalink.tables  # noqa: F401
    import strangler.migrate.copy  # noqa: F401
    import strangler.migrate.schema  # noqa: F401
    import strangler.migrate.sync  # noqa: F401

    module = (plan.backends[plan.monolith].app or "").partition(":")[0]
    if module:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 — a warm-up only: the link imports it again and reports what fails
            pass


def link_all(plan: Plan, etcd: Etcd, echo: Echo = lambda line: None) -> list[str]:
    """Link every data service the stack starts (see :func:`link_services`); return their names."""
    return link_services(plan, etcd, services_to_link(plan), echo)


def link_services(plan: Plan, etcd: Etcd, services: list[str], echo: Echo = lambda line: None) -> list[str]:
    """Upgrade the monolith's and ``services``' schemas, then link each; return ``services``.

    Raises DataError (one line) when a database is unreachable, schemas
    differ or a service's database has diverged from the monolith's.
    """
    from datalink.tables import MigrateError
    from strangler.migrate import schema

    if not services:
        return []
    if plan.database_url(plan.monolith) is None:
        raise DataError(f"{', '.join(services)} own data but the monolith has no database in the plan; "
                        f"add database = \"...\" to [backends.{plan.monolith}]")
    try:
        for name in [plan.monolith, *services]:
            schema.upgrade(schema.databases(plan, name)[0])
        for service in services:
            link_service(plan, etcd, service, echo)
    except MigrateError as exc:
        raise DataError(f"cannot link the services' data: {exc}") from None
    return services


def link_service(plan: Plan, etcd: Etcd, service: str, echo: Echo = lambda line: None) -> None:
    """Link one data service whose schemas are at head: copy (or catch up), record, id lanes.

    ``strangler link`` runs it in deployments where no ``up`` does (MigrateError on failure).
    """
    record = read_links(etcd).get(service)
    same_db = record is not None and record.get("target") == _display(plan, service)
    if same_db and is_linked(plan, service, {service: record}):
        _catch_up(plan, service, echo)
    else:
        _link(plan, etcd, service, echo)
    _set_lanes(plan, etcd, service)


def _display(plan: Plan, name: str) -> str:
    from datalink.tables import display_url

    return display_url(plan.database_url(name))


def _link(plan: Plan, etcd: Etcd, service: str, echo: Echo) -> None:
    """Copy *service*'s tables out of the monolith's database and record the link in etcd."""
    from datalink.tables import engines
    from strangler.migrate.copy import plan_copy, run_copy
    from strangler.migrate.sync import OVERLAP, SyncState

    tables = list(plan.backend(service).tables)
    labels = (plan.monolith, service)
    began = int(time.time())
    with engines((plan.database_url(plan.monolith), plan.monolith),
                 (plan.database_url(service), service)) as (source, target):
        plans = plan_copy(source, target, tables, labels, identities=plan.identities(tables))
        for path in state_paths(plan.run_dir, service):
            # both directions carry every change from the copy's start on
            state = SyncState.load(path)
            for table in tables:
                state.start_at(table, began - OVERLAP)
            state.save()
        result = run_copy(source, target, plans)
    record = {"tables": tables, "source": _display(plan, plan.monolith), "target": _display(plan, service),
              "linked_at": time.time(), "rows": result.rows, "seconds": round(result.seconds, 3)}
    etcd.put(link_key(service), json.dumps(record, sort_keys=True))
    parts = ", ".join(f"{t.table} {t.copied + t.refreshed:,}" for t in result.tables)
    echo(f"data: linked {service} with {plan.monolith} ({parts} rows copied in {result.seconds:.1f}s)")


def _set_lanes(plan: Plan, etcd: Etcd, service: str) -> None:
    """Give each side of *service*'s link its id lane, and note the lanes in the link record.

    PostgreSQL sequences are set here, before any backend starts; MariaDB and
    SQLite apps take their lane from ``STRANGLER_WRITE_THROUGH`` (datalink.ids).
    The routing guards allow canaries on inserting endpoints once the lanes are noted.
    """
    from datalink.ids import Lane, configure_sequence
    from datalink.tables import engines, reflect

    lanes = id_lanes(plan, service)
    with engines(*((plan.database_url(name), name) for name in lanes)) as opened:
        for (name, lane), engine in zip(lanes.items(), opened, strict=True):
            for table in plan.backend(service).tables:
                info = reflect(engine, table, name)
                configure_sequence(engine, table, info.id_column, Lane(*lane))
    record = json.loads(etcd.get(link_key(service)) or "{}")
    if record.get("lanes") != lanes:
        etcd.put(link_key(service), json.dumps({**record, "lanes": lanes}, sort_keys=True))


def _catch_up(plan: Plan, service: str, echo: Echo) -> None:
    """One sync pass each way, for writes a peer missed while it was down (before any backend starts)."""
    from strangler.migrate.sync import SyncState, sync_once

    applied = 0
    for direction in follower_spec(plan, service)["directions"]:
        state = SyncState.load(direction["state"])
        tables = list(plan.backend(service).tables)
        result = sync_once(direction["source"], direction["target"], tables, state,
                           labels=tuple(direction["labels"]), identities=plan.identities(tables))
        applied += result.applied
    echo(f"data: {service} linked with {plan.monolith}; caught up {applied} row(s)")
