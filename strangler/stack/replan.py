"""Plan changes on a running stack: a second ``strangler up`` reconciles it with the plan.

The CLI side (:func:`reconcile_running`) compares the plan with what the
stack runs, refuses (one line, nothing changed) to remove a backend that still
serves routes, links a new data service's tables as ``up`` does, applies the
plan's routes keeping live flips, then writes one request in etcd
(:data:`PLAN_KEY`) with the new backends' instance counts
(:mod:`strangler.stack.scale`'s intents) and waits for the supervisor.

The supervisor's side (:func:`carry_out`, called from its loop before the
scale intents) reloads the plan, starts the followers of newly linked
services, and drains every instance of a removed backend; the scale intents
then start the new backends' instances, under supervision like the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from router.etcd import Etcd, EtcdError, Put
from strangler.plan import Plan
from strangler.stack import procs
from strangler.stack.procs import StackError
from strangler.stack.scale import POLL, progress, routes_served, scale_key, start_drain

PLAN_KEY = "strangler/stack/plan"

Echo = Callable[[str], None]


class Change(NamedTuple):
    """What the stack lacks (backend -> instances to start) and what the plan no longer has."""

    added: dict[str, int]
    removed: list[str]


def diff(plan: Plan, running: Iterable[str]) -> Change:
    """PURE: the backends ``up`` starts that the stack does not run, and the ones it runs the plan dropped.

    ``running`` names the backends the stack has (``state.json``'s, a backend
    scaled to 0 included). A backend with ``start = false`` counts as dropped.
    """
    have = set(running)
    wanted = {name: b.instances for name, b in plan.backends.items() if b.start}
    added = {name: n for name, n in wanted.items() if name not in have}
    removed = sorted(name for name in have if name not in wanted)
    return Change(added, removed)


def summary(change: Change, held: int = 0) -> str:
    """PURE: the one line ``up`` ends with: what it started and stopped."""
    parts = [f"started {name} ({n} instance{'s' if n != 1 else ''})" for name, n in change.added.items()]
    parts += [f"stopped {name} (drained)" for name in change.removed]
    return "; ".join(parts) if parts else "nothing to do: the stack matches the plan"


# ---- the CLI's side ---------------------------------------------------------------------------


def reconcile_running(plan: Plan, run_dir: Path, echo: Echo, timeout: float = 180) -> str:
    """Bring the stack running from ``run_dir`` to ``plan``; return the summary line.

    StackError (one line) when there is no supervisor to ask, a removed
    backend still serves routes (nothing changed), linking fails, or the
    supervisor does not get there within ``timeout`` seconds.
    """
    from router import table
    from strangler.routing.apply import apply_plan
    from strangler.stack.state import SUPERVISOR, read_state, running_records

    state = read_state(run_dir)
    live = running_records(run_dir)
    if not state or not state.get("etcd"):
        raise StackError(f"a stack is partly running from {run_dir}; stop it with `strangler down`")
    if SUPERVISOR not in live:
        raise StackError(f"the stack running from {run_dir} has no supervisor to start or stop backends; "
                         "`strangler down` and `strangler up` again")
    if not plan.backends[plan.monolith].start:
        raise StackError(f"backends.{plan.monolith}.start is false; the stack needs the monolith")
    change = diff(plan, state.get("backends", {}))
    etcd = Etcd(state["etcd"], timeout=5)
    try:
        routes, _ = table.load(etcd)
        serving = {name: routes_served(routes.values(), name, plan.monolith) for name in change.removed}
        serving = {name: served for name, served in serving.items() if served}
        if serving:
            raise StackError("not stopping " + "; ".join(
                f"{name}: it still serves {', '.join(served[:5])}{', ...' if len(served) > 5 else ''}"
                for name, served in serving.items()) + " (flip those routes away or roll them back, then "
                "`strangler up` again); nothing changed")
        linked = _link_new(plan, etcd, change, echo)
        held = apply_plan(etcd, plan, moves="keep").moves
        if held:
            echo(f"kept {len(held)} live route(s) the plan would move "
                 f"(strangler plan apply --yes moves them): {'; '.join(held)}")
        if not change.added and not change.removed:
            return summary(change)
        request = {"plan": str(plan.path), "added": change.added, "removed": change.removed,
                   "linked": linked, "by": table.current_user(), "at": time.time()}
        etcd.txn(puts=[Put(PLAN_KEY, json.dumps(request))] + [
            Put(scale_key(name), json.dumps({"instances": n, "by": "up", "at": time.time()}))
            for name, n in change.added.items()])
    except EtcdError as exc:
        raise StackError(f"etcd at {state['etcd']} did not answer: {exc}") from None
    _wait(run_dir, change, echo, timeout)
    return summary(change)


def _link_new(plan: Plan, etcd: Etcd, change: Change, echo: Echo) -> list[str]:
    """Link the data of new backends that own tables, as ``up`` does, before they start."""
    from strangler.stack.data import DataError, link_services

    try:
        services = link_services(plan, etcd, [name for name in plan.data_services() if name in change.added],
                                 echo)
    except DataError as exc:
        raise StackError(str(exc)) from None
    if not services:
        return []
    echo(f"data ready: {', '.join(services)} linked")
    # the monolith's instances got their write-through peers and id lane when they started
    echo(f"the running {plan.monolith} instances write through to {', '.join(services)} once replaced: "
         f"`strangler upgrade {plan.monolith} roll` before flipping writes to "
         f"{'them' if len(services) > 1 else services[0]}")
    return services


def _wait(run_dir: Path, change: Change, echo: Echo, timeout: float) -> None:
    """Until the new backends are healthy and the removed ones have no process left."""
    from strangler.stack.state import read_status

    began = time.monotonic()
    shown: set[str] = set()
    while True:
        processes = read_status(run_dir)
        done = True
        for name, n in change.added.items():
            seen = progress(processes, name)
            if seen.get("crashlooping"):
                raise StackError(f"{name}: an instance is crashlooping; `strangler status` names its log")
            if seen != {"healthy": n}:
                done = False
            elif name not in shown:
                echo(f"{name} ready: {n} instance{'s' if n != 1 else ''} healthy and registered")
                shown.add(name)
        for name in change.removed:
            if progress(processes, name):
                done = False
            elif name not in shown:
                echo(f"{name} drained and stopped")
                shown.add(name)
        if done:
            return
        if time.monotonic() - began > timeout:
            raise StackError(f"the stack did not match the plan within {timeout:g}s; "
                             "`strangler status` shows where it is")
        time.sleep(0.2)


# ---- the supervisor's side ------------------------------------------------------------------


def carry_out(stack: Any, supervisor: Any) -> None:
    """Apply a request ``up`` wrote (see the module doc); called from the supervisor's loop."""
    from strangler.plan import PlanError, load_plan

    now = time.monotonic()
    if now - getattr(stack, "_plan_read", 0.0) < POLL:
        return
    stack._plan_read = now
    try:
        raw = getattr(stack, "reads", stack.client).get(PLAN_KEY)
    except EtcdError:
        return  # etcd restarting: next pass
    if raw is None or raw == getattr(stack, "_plan_done", None):
        return
    stack._plan_done = raw
    try:
        request = json.loads(raw)
        plan = load_plan(Path(request["plan"]))
    except (ValueError, KeyError, TypeError, PlanError) as exc:
        supervisor.echo(f"plan change not applied: {exc}")
        return
    # ports, etcd members and log settings belong to the running stack: they stay
    stack.plan = replace(plan, run_dir=stack.run_dir, stack=stack.plan.stack)
    for service in request.get("linked", []):
        _start_follower(stack, supervisor, service)
    for backend in request.get("removed", []):
        _remove(stack, supervisor, backend)
    stack.write_state()
    supervisor.echo(f"plan reloaded from {request['plan']}: "
                    f"{summary(Change(request.get('added', {}), request.get('removed', [])))}")


def _start_follower(stack: Any, supervisor: Any, service: str) -> None:
    """The sync follower of a newly linked service, supervised like the others."""
    from strangler.stack.data import data_state, follower_proc

    linked = stack.launch_args.setdefault("linked", [])
    if service not in linked:
        linked.append(service)
    name = f"sync-{service}"
    if name in stack.procs and stack.procs[name].alive():
        return
    proc, metrics = follower_proc(stack.plan, stack.run_dir, service)
    with supervisor.lock:
        stack.launch(proc)
        supervisor.watch(proc)
    stack.state.setdefault("data", {}).update(data_state(stack.plan, [service]))
    stack.state["data"][service]["metrics"] = metrics
    supervisor.echo(f"{name} started (pid {proc.pid})")


def _remove(stack: Any, supervisor: Any, backend: str) -> None:
    """Drain every instance of ``backend`` and forget it: its intent, release, follower and state."""
    with supervisor.lock:
        mine = [w.proc.name for w in supervisor.watched.values()
                if w.backend == backend and w.state != "draining"]
    for name in mine:
        start_drain(stack, supervisor, name)
    try:
        stack.client.delete(scale_key(backend))
    except EtcdError:
        pass  # the plan no longer has it: scale's reconcile ignores the intent anyway
    stack.releases.pop(backend, None)
    stack.state.get("backends", {}).pop(backend, None)
    follower = f"sync-{backend}"
    if follower in stack.procs:
        proc = stack.procs.pop(follower)
        with supervisor.lock:
            supervisor.forget(follower)
        proc.stop(timeout=10)
        procs.remove_pidfile(stack.run_dir, follower)
        stack.state.get("data", {}).pop(backend, None)
        linked = stack.launch_args.get("linked", [])
        if backend in linked:
            linked.remove(backend)

