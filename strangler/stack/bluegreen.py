"""Blue/green upgrades: a second full set of instances under its own Traefik service, switched in one transaction.

``strangler upgrade users --blue-green`` writes an intent (``mode =
"blue-green"`` in ``strangler/stack/upgrade/users``, see
:mod:`strangler.stack.upgrade`); the supervisor carries it out here:

1. ``blue-green``: start as many instances of the new release as the backend
   runs, registered under the new set's Traefik service (``users-green``, or
   ``users`` again when ``users-green`` is live: the sets alternate);
2. once every one is healthy, registered and listed by Traefik's API:
   **switch** - one :func:`router.table.apply` that rewrites the stored
   options (``sets``: the backend's services, live first) and, derived from
   them, every router, canary, mirror and A/B router that sends the backend
   traffic (the catch-all too for the monolith), recorded in the history;
   once Traefik's API shows it, the step becomes ``switched``;
3. ``finish``: drain the old set; the new set is the backend's from then on
   (its release is what ``scale`` starts, under its service); ``rollback``:
   switch back in one transaction, confirm it live, drain the new set.
   Either ends by dropping the drained set from the options (a record too).

Routes written meanwhile (a flip, a canary) derive their keys from the same
stored options, so they point at whichever set is live.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from router import table
from router.etcd import EtcdError
from router.keys import MONOLITH, Route, live_spec, shadow_service
from router.traefik import TraefikAPI, TraefikError, spec_mismatches
from strangler.stack.running import next_launch, start, start_drain
from strangler.stack.upgrade import Intent, Seen, finished, scale_to, upgrade_key


def actions(count: int, intent: Intent, instances: Sequence[Seen], live: str) -> tuple[list[tuple[str, str]], bool]:
    """PURE: what the supervisor does next for a pending blue/green, and whether the step is done.

    Actions are ``("start", "new" | "old")``, ``("drain", name)`` and
    ``("switch", service)`` (point the backend's routers at ``service``).
    ``live`` is the service its routers point at now; ``count`` the
    backend's instance count (each set runs that many). A step that is done
    still needs Traefik's confirmation before the next one drains anything.
    """
    new = [i for i in instances if i.service == intent.service]
    old = [i for i in instances if i.service != intent.service]
    if intent.step in ("blue-green", "switched"):
        todo = scale_to(new, count, "new") + scale_to(old, count, "old")
        if intent.step == "switched" or live == intent.service:
            return todo, intent.step == "blue-green"
        ready = len(new) == count and all(i.state == "healthy" for i in new)
        return (todo or [("switch", intent.service)]) if ready else todo, False
    if intent.step == "finish":
        if live != intent.service:
            return [("switch", intent.service)], False
        return [("drain", i.name) for i in old] + scale_to(new, count, "new"), not old
    # rollback: back to the old set first, then drain the new one
    if live == intent.service:
        return [("switch", intent.base)], False
    return [("drain", i.name) for i in new] + scale_to(old, count, "old"), not new


def routes_of(routes: Iterable[Route], backend: str, monolith: str) -> list[Route]:
    """PURE: the routes that send plan backend ``backend`` traffic (any way: flipped, canary, mirror, A/B)."""
    name = MONOLITH if backend == monolith else backend
    return [route for route in routes if name in route.backends]


def live_now(api: TraefikAPI, routes: Iterable[Route], options: table.Options, backend: str) -> bool:
    """True when Traefik's API routes every router of ``backend`` as ``options`` say (one poll)."""
    mine = routes_of(routes, backend, options.monolith)
    spec = dict(live_spec(mine, options.monolith, options.sets))
    if backend == options.monolith:
        spec["catchall"] = options.service(MONOLITH)
    try:
        routers, services = api.named(spec)
        if spec_mismatches(spec, routers, services):
            return False
        for route in mine:  # a shadow's mirroring service names the sets it sends to
            if not route.mirror:
                continue
            mirroring = ((api.service(shadow_service(route.endpoint.id)) or {}).get("mirroring") or {})
            if _bare(options.service(route.mirror)) not in [_bare(m.get("name", ""))
                                                           for m in mirroring.get("mirrors") or []]:
                return False
            if not route.weights and _bare(options.service(route.backend)) != _bare(mirroring.get("service", "")):
                return False
    except TraefikError:
        return False
    return True


def _bare(name: str) -> str:
    return name.split("@")[0]


def listed_all(api: TraefikAPI, service: str, urls: Iterable[str]) -> bool:
    """True when Traefik's API lists every one of ``urls`` among ``service``'s servers."""
    try:
        found = (api.service(service) or {}).get("loadBalancer", {}).get("servers") or []
    except TraefikError:
        return False
    return set(urls) <= {server.get("url") for server in found}


def switch(etcd: Any, backend: str, services: list[str], what: str) -> table.Change | None:
    """Point every router of ``backend`` at ``services[0]`` (keeping the others declared) in ONE
    guarded transaction with its history record; None when it already was."""
    def same(routes: table.Routes) -> table.Routes:
        return routes

    options = table.load_options(etcd)
    return table.apply(etcd, same, who="supervisor", what=what, options=options.with_live(backend, services))


# ---- the supervisor's side ------------------------------------------------------------------


def carry_out(stack: Any, supervisor: Any, backend: str, count: int, intent: Intent) -> None:
    """One pass of a pending blue/green of ``backend`` (called from strangler.stack.scale.reconcile)."""
    try:
        options = table.load_options(stack.client)
    except EtcdError:
        return
    live = options.service(backend)
    with supervisor.lock:
        seen = [Seen(w.proc.name, w.release, w.state, stack.launches[w.proc.name].instance,
                     stack.launches[w.proc.name].traefik_service)
                for w in supervisor.watched.values() if w.backend == backend and w.state != "draining"]
    todo, done = actions(count, intent, seen, live)
    confirmed = None  # asked once per pass, and only when something waits for it

    def is_live() -> bool:
        nonlocal confirmed
        if confirmed is None:
            routes, _ = table.load(stack.client)
            confirmed = live_now(stack.api, routes.values(), options, backend)
        return confirmed

    for what, which in todo:
        if what == "switch":
            urls = [stack.launches[i.name].url for i in seen if i.service == which]
            if not listed_all(stack.api, which, urls):
                return  # healthy and registered, but Traefik does not balance over them yet
            others = [intent.base, intent.service] if which == intent.base else [intent.service, intent.base]
            verb = "switch back to" if which == intent.base else "switch to"
            release = intent.previous if which == intent.base else intent.release
            try:
                change = switch(stack.client, backend, others,
                                f"upgrade {backend} blue/green: {verb} {which} (release {release})")
            except (table.ConcurrentChange, EtcdError) as exc:
                supervisor.echo(f"blue/green of {backend}: switch not written ({exc}); retrying")
                return
            supervisor.echo(f"blue/green of {backend}: {verb} {which} written"
                            + (f" (change {change.id})" if change else ""))
            return
        if what == "drain":
            if not is_live():
                return  # Traefik still routes to the set this would take out
            start_drain(stack, supervisor, which)
        elif which == "new":
            start(stack, supervisor, next_launch(stack, backend, release=intent.release, env=intent.env,
                                                 service=intent.service))
        else:
            start(stack, supervisor, next_launch(stack, backend, release=stack.current_release(backend),
                                                 env=stack.current_env(backend), service=intent.base))
    with supervisor.lock:  # done once the drained set's processes have gone, not just begun to
        leaving = [w for w in supervisor.watched.values() if w.backend == backend and w.state == "draining"]
    if not done or leaving or not is_live():
        return
    if intent.step == "finish":
        stack.releases[backend] = (intent.release, dict(intent.env))
        tidy = [intent.service]
    elif intent.step == "rollback":
        tidy = [intent.base]
    else:
        tidy = None
    if tidy is not None:
        try:
            switch(stack.client, backend, tidy,
                   f"upgrade {backend} blue/green: {intent.step} done, {tidy[0]} is the only set")
        except (table.ConcurrentChange, EtcdError):
            return  # next pass
    stack.client.put(upgrade_key(backend), finished(intent).to_json())
    supervisor.echo(f"blue/green of {backend} to {intent.release}: {finished(intent).step}")
