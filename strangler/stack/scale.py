"""How many instances each backend runs: the intent in etcd, the checks, and the supervisor's side.

``strangler scale users=3`` writes the intent (``strangler/stack/scale/<backend>``,
JSON ``{"instances": N}``) and watches; the supervisor carries it out
(:func:`reconcile`): it starts instances until N are healthy and registered,
and drains the surplus (:mod:`strangler.stack.drain`). ``up`` writes the
plan's ``instances`` first, so the plan stays the default for a fresh stack.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from router.etcd import Etcd, EtcdError, Put
from router.keys import Route
from router.table import load_options
from strangler.plan import Plan
from strangler.stack import bluegreen
from strangler.stack.retire import enforce
from strangler.stack.running import next_launch, start, start_drain
from strangler.stack.upgrade import Intent, Seen, actions, finished, read_intents, upgrade_key

SCALE_PREFIX = "strangler/stack/scale/"
POLL = 0.3  # seconds between the supervisor's reads of the intents


class ScaleSpec(NamedTuple):
    """One ``BACKEND=N`` argument."""

    backend: str
    instances: int


def parse_scale_spec(text: str) -> ScaleSpec:
    """PURE: ``"users=3"`` -> ScaleSpec("users", 3); ValueError (saying what to write) otherwise."""
    backend, sep, count = text.partition("=")
    if not sep or not backend.strip():
        raise ValueError(f"{text!r}: write BACKEND=N, e.g. users=3")
    try:
        instances = int(count.strip())
    except ValueError:
        raise ValueError(f"{text!r}: N must be a whole number, e.g. {backend.strip()}=3") from None
    if instances < 0:
        raise ValueError(f"{text!r}: N must be 0 or more")
    return ScaleSpec(backend.strip(), instances)


def check_backend(plan: Plan, backend: str) -> None:
    """ValueError when ``backend`` is not one ``up`` runs (unknown, or ``start = false``)."""
    if backend not in plan.backends:
        raise ValueError(f"no backend {backend!r} in the plan (backends: {', '.join(plan.backends)})")
    if not plan.backends[backend].start:
        raise ValueError(f"backends.{backend}.start is false in the plan: `strangler up` does not run it")


def routes_served(routes: Iterable[Route], backend: str, monolith: str) -> list[str]:
    """PURE: what still sends ``backend`` traffic (endpoints, and the catch-all for the monolith)."""
    served = sorted(str(route.endpoint) for route in routes if backend in route.backends)
    return (["the catch-all"] if backend == monolith else []) + served


def scale_key(backend: str) -> str:
    """PURE: where the wanted instance count of ``backend`` lives."""
    return f"{SCALE_PREFIX}{backend}"


def write_counts(etcd: Etcd, counts: Mapping[str, int], who: str = "") -> None:
    """Record the wanted counts, all in one transaction."""
    etcd.txn(puts=[Put(scale_key(backend), json.dumps({"instances": n, "by": who, "at": time.time()}))
                   for backend, n in counts.items()])


def read_counts(etcd: Etcd) -> dict[str, int]:
    """The wanted count per backend (malformed entries skipped)."""
    entries, _ = etcd.get_prefix(SCALE_PREFIX)
    counts = {}
    for key, value in entries.items():
        try:
            counts[key[len(SCALE_PREFIX):]] = int(json.loads(value)["instances"])
        except (ValueError, KeyError, TypeError):
            continue
    return counts


def progress(processes: Mapping[str, Mapping[str, Any]], backend: str) -> dict[str, int]:
    """PURE: a backend's instances in supervisor.json by state (``healthy``, ``draining``, ...)."""
    counts: dict[str, int] = {}
    for entry in processes.values():
        if entry.get("backend") == backend:
            counts[entry["state"]] = counts.get(entry["state"], 0) + 1
    return counts


# ---- the supervisor's side ------------------------------------------------------------------


def reconcile(stack: Any, supervisor: Any) -> None:
    """Bring each backend's instance count to what etcd asks (called from the supervisor's loop)."""
    now = time.monotonic()
    if now - getattr(stack, "_intents_read", 0.0) < POLL:
        return
    stack._intents_read = now
    enforce(stack, supervisor)  # a retired monolith's followers stay stopped
    try:
        reads = getattr(stack, "reads", stack.client)  # cached while etcd's revision stands
        wanted = read_counts(reads)
        intents = read_intents(reads)
        options = load_options(reads)
    except EtcdError:
        return  # etcd restarting: next pass
    changed = False
    for backend, count in wanted.items():
        if backend not in stack.plan.backends or not stack.plan.backends[backend].start:
            continue
        if stack.state.get("backends", {}).get(backend, {}).get("desired") != count:
            stack.state.setdefault("backends", {}).setdefault(backend, {"instances": []})["desired"] = count
            changed = True
        intent = intents.get(backend)
        if intent is not None and intent.pending and intent.blue_green:
            bluegreen.carry_out(stack, supervisor, backend, count, intent)
            continue
        live = options.service(backend)
        if intent is not None and intent.pending:
            _upgrade(stack, supervisor, backend, count, intent, live)
            continue
        with supervisor.lock:
            mine = [w for w in supervisor.watched.values() if w.backend == backend and w.state != "draining"]
        for _ in range(count - len(mine)):
            start(stack, supervisor, next_launch(stack, backend, release=stack.current_release(backend),
                                                 env=stack.current_env(backend), service=live))
        if len(mine) > count:
            # crashlooping ones first, then the newest
            surplus = sorted(mine, key=lambda w: (w.state != "crashlooping", -stack.launches[w.proc.name].instance))
            for watched in surplus[: len(mine) - count]:
                start_drain(stack, supervisor, watched.proc.name)
    if changed:
        stack.write_state()


def _upgrade(stack: Any, supervisor: Any, backend: str, count: int, intent: Intent, live: str) -> None:
    """One step of a pending upgrade (see strangler.stack.upgrade.actions)."""
    with supervisor.lock:
        seen = [Seen(w.proc.name, w.release, w.state, stack.launches[w.proc.name].instance)
                for w in supervisor.watched.values() if w.backend == backend and w.state != "draining"]
    todo, done = actions(count, intent, seen)
    for what, which in todo:
        if what == "drain":
            start_drain(stack, supervisor, which)
        elif which == "new":
            start(stack, supervisor, next_launch(stack, backend, release=intent.release, env=intent.env,
                                                 service=live))
        else:
            start(stack, supervisor, next_launch(stack, backend, release=stack.current_release(backend),
                                                 env=stack.current_env(backend), service=live))
    if done and intent.step != "try":
        if intent.step == "roll":
            stack.releases[backend] = (intent.release, dict(intent.env))
        stack.client.put(upgrade_key(backend), finished(intent).to_json())
        supervisor.echo(f"upgrade of {backend} to {intent.release}: {finished(intent).step}")
