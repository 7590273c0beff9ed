"""``strangler shadow`` logic: put endpoints on (or off) the comparator's mirror, as routing changes.

No Click here (``strangler.shadow.cli``). Like a flip: checked against the
plan without I/O first, then against the world (the comparator and the
candidate have healthy instances; Traefik's API answers), written as ONE
change with ``router.table.apply`` (so it is in the history and
``strangler rollback`` undoes it) and confirmed live through Traefik's API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from router import registry
from router.etcd import Etcd
from router.keys import MONOLITH, SAFE, Endpoint
from router.traefik import TraefikAPI
from strangler import routing
from strangler.plan import Plan
from strangler.routing import Outcome, Routes, RoutingError, summary
from strangler.shadow.worker import COMPARATOR


def check_shadow(plan: Plan, endpoints: Sequence[Endpoint], target: str) -> None:
    """PURE: refuse shadowing ``endpoints`` to plan backend ``target`` when it compares nothing real.

    The target must be a service the plan lets answer each endpoint, and the
    monolith must have the endpoint (it is what the candidate is compared with).
    """
    if plan.backend(target).is_monolith or target == COMPARATOR:
        raise RoutingError(f"--to {target}: shadow compares a service with the monolith; "
                           "name the service that will answer, e.g. --to users")
    for endpoint in endpoints:
        if endpoint.is_prefix:
            raise RoutingError(f"{endpoint} is a prefix (every method, every path below it); "
                               "shadow its exact endpoints instead")
        allowed = routing.allowed_backends(plan, endpoint)
        if MONOLITH not in allowed:
            raise RoutingError(f"the monolith does not answer {endpoint}, so there is nothing to "
                               "compare it with")
        if target not in allowed:
            raise RoutingError(f"the plan gives {endpoint} to {plan.owner(endpoint)}, not {target}; "
                               "shadow it to its owner")


def unsafe_notes(plan: Plan, endpoints: Sequence[Endpoint]) -> list[str]:
    """PURE: one line per write endpoint whose copies the comparator will count but not replay."""
    return [
        f"{e}: writes are counted, not replayed (set shadow_unsafe = true in [compare.\"{e}\"] "
        "if replaying it twice is harmless)"
        for e in endpoints
        if e.method not in SAFE and not plan.compare_rule(e).shadow_unsafe
    ]


def check_comparator(etcd: Etcd, timeout: float = 1.0) -> None:
    """Refuse unless a comparator instance is registered and answers its health check."""
    if not registry.healthy_instances(etcd, COMPARATOR, timeout=timeout):
        raise RoutingError("the comparator has no healthy instance registered; start it with "
                           "strangler up (the plan declares [backends.comparator], see docs/shadow.md)")


def shadow_on(etcd: Etcd, plan: Plan, endpoints: Sequence[Endpoint], target: str, *,
              api: TraefikAPI | None = None, who: str | None = None, timeout: float = 10.0,
              percent: int = 100) -> Outcome:
    """Mirror ``endpoints`` to the comparator, comparing the monolith with ``target``, in ONE change.

    ``percent``: the share of requests Traefik copies (1-100); the others cost nothing.

    Who answers users does not change. Refuses (RoutingError, nothing written)
    what check_shadow refuses, a comparator or target without a healthy
    instance, endpoints not in the table yet and an unreachable Traefik API.
    """
    check_shadow(plan, endpoints, target)
    check_comparator(etcd)
    routing.check_healthy(etcd, plan, [target])
    routing.check_traefik(api)

    def change(routes: Routes) -> Routes:
        for endpoint in endpoints:
            if endpoint not in routes:
                raise RoutingError(f"{endpoint} is not in the routing table yet; run strangler plan apply")
            routes[endpoint] = replace(routes[endpoint], mirror=COMPARATOR, candidate=target,
                                       mirror_percent=percent)
        return routes

    share = "" if percent == 100 else f" ({percent}% of requests copied)"
    return routing.write(etcd, api, change, what=f"shadow {summary(endpoints)} to {target}{share}",
                         who=who or routing.table.current_user(), timeout=timeout, only=endpoints)


def shadow_off(etcd: Etcd, plan: Plan, endpoints: Sequence[Endpoint] = (), *,
               api: TraefikAPI | None = None, who: str | None = None, timeout: float = 10.0) -> Outcome:
    """End shadowing of ``endpoints`` (none named: every shadowed endpoint) in ONE change."""
    routing.check_traefik(api)
    current, _ = routing.table.load(etcd)
    shadowed = [ep for ep, route in sorted(current.items(), key=lambda i: i[0].id) if route.mirror]
    chosen = list(endpoints) or shadowed
    if not chosen:
        raise RoutingError("no endpoint is shadowed; nothing to turn off")
    idle = [str(ep) for ep in chosen if ep not in shadowed]
    if idle:
        raise RoutingError(f"{', '.join(idle)} is not shadowed; see strangler routes")

    def change(routes: Routes) -> Routes:
        for endpoint in chosen:
            if endpoint in routes:
                routes[endpoint] = replace(routes[endpoint], mirror=None, candidate=None)
        return routes

    return routing.write(etcd, api, change, what=f"shadow off {summary(chosen)}",
                         who=who or routing.table.current_user(), timeout=timeout)
