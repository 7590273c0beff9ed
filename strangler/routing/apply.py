"""The plan side of routing: ``plan apply`` (make etcd match the plan) and the ``routes`` view.

Split from :mod:`strangler.routing` along the idea: that module moves
endpoints a person names; this one compares the whole table with the plan.
The comparisons are pure; ``apply_plan`` is the one function doing I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

from router import table
from router.etcd import Etcd
from router.keys import INTERNAL_ENTRYPOINT, MONOLITH, Endpoint, Route, parse_endpoint
from router.traefik import TraefikAPI
from strangler.plan import Plan
from strangler.routing import (
    Outcome,
    Routes,
    RoutingError,
    allowed_backends,
    answering_backends,
    check_traefik,
    describe,
    is_frozen,
    plan_backend,
    route_backend,
    write,
)


def plan_options(plan: Plan, stored: table.Options | None = None) -> table.Options:
    """The Traefik options the plan implies: its monolith's name, every backend's health path,
    the internal entrypoint (which every static config the toolkit writes has) and a
    secret that marks mirrored copies for the comparator (generated once, then kept).

    The public entrypoint is kept from ``stored`` (it names the stack's static config, not the plan).
    """
    base = stored or table.Options()
    checks = {name: backend.health for name, backend in plan.backends.items()}
    sticky = sorted(name for name, backend in plan.backends.items() if backend.sticky)
    return replace(base, monolith=plan.monolith, healthchecks=checks, sticky=sticky,
                   internal_entrypoint=base.internal_entrypoint or INTERNAL_ENTRYPOINT,
                   mirror_secret=base.mirror_secret or secrets.token_urlsafe(32))


# What `plan apply` does with a live route the plan would move: refuse (the default),
# move it (--yes), or keep it where it is and apply the rest (--keep-live, strangler up).
LiveMoves = Literal["refuse", "move", "keep"]


class MovesLiveTraffic(RoutingError):
    """``plan apply`` would move live routes and was not told to; ``moves`` lists them."""

    def __init__(self, moves: list[str]) -> None:
        self.moves = moves
        super().__init__(
            f"the plan would move {len(moves)} live route(s); nothing was written: "
            "re-run with --yes to move them, or --dry-run to see every change"
        )


def desired_routes(plan: Plan, current: Routes, keep_live: bool = False) -> Routes:
    """PURE: the table ``plan apply`` leaves: every planned endpoint, nothing else.

    A new endpoint starts at its starting place; one already in the table
    keeps its route (flips survive) unless a backend answers it that the
    plan does not allow (e.g. a frozen new-only endpoint moved off the
    monolith), which then goes back to its starting place, keeping any
    shadow mirror. Endpoints the plan no longer has are left out, so the
    catch-all sends them to the monolith. With ``keep_live``, an endpoint
    whose answering backends that would change (see live_moves) keeps its
    current route instead.
    """
    wanted: Routes = {}
    for planned in plan.routes():
        endpoint = planned.endpoint
        start = Route(endpoint, route_backend(plan, planned.initial))
        route = current.get(endpoint)
        if route is None:
            wanted[endpoint] = start
        elif answering_backends(route) <= allowed_backends(plan, endpoint):
            wanted[endpoint] = route
        else:
            wanted[endpoint] = Route(endpoint, start.backend, mirror=route.mirror,
                                     mirror_percent=route.mirror_percent)
    if keep_live:
        for endpoint, route in current.items():
            if _answering(route) != _answering(wanted.get(endpoint)):
                wanted[endpoint] = route
    return wanted


def _answering(route: Route | None) -> tuple[str, dict[str, int], Any]:
    # Who answers: one backend, or a weighted split, and an A/B route's matching requests;
    # no route means the catch-all (monolith).
    if route is None:
        return MONOLITH, {}, None
    return route.backend, dict(route.weights or {}), route.match


def live_moves(plan: Plan, current: Mapping[Any, Route | None],
               wanted: Mapping[Any, Route | None]) -> list[str]:
    """PURE: ``endpoint: from -> to`` for each endpoint in the table whose answering backends change.

    Only routes already in ``current`` are live; a new endpoint added to the
    table takes over nothing the plan had routed (the catch-all answered it).
    A change of shadow mirror alone moves no traffic either.
    """
    lines = []
    keys = {str(k): k for k, route in current.items() if route is not None}
    for spec in sorted(keys, key=lambda s: parse_endpoint(s).id):
        old, new = current[keys[spec]], wanted.get(keys[spec])
        if _answering(old) == _answering(new):
            continue
        to = describe(plan, new) if new else f"{plan.monolith} (the catch-all; not in the plan)"
        lines.append(f"{spec}: {describe(plan, old)} -> {to}")
    return lines


def diff_lines(
    plan: Plan, before: dict[Any, Route | None], after: dict[Any, Route | None]
) -> list[str]:
    """PURE: one line per endpoint whose route differs: ``+`` added, ``-`` removed, ``~`` changed."""
    lines = []
    keys = {str(k): k for k in set(before) | set(after)}
    for spec in sorted(keys, key=lambda s: parse_endpoint(s).id):
        old, new = before.get(keys[spec]), after.get(keys[spec])
        if old == new:
            continue
        if old is None:
            lines.append(f"+ {spec}: {describe(plan, new)}")
        elif new is None:
            lines.append(
                f"- {spec}: was {describe(plan, old)}; not in the plan, "
                "so the catch-all sends it to the monolith"
            )
        else:
            lines.append(f"~ {spec}: {describe(plan, old)} -> {describe(plan, new)}")
    return lines


def options_line(old: table.Options, new: table.Options) -> list[str]:
    """PURE: a line saying how the stored Traefik options change ([] when they do not)."""
    if old == new:
        return []
    checks = ", ".join(f"{b} {p}" for b, p in sorted(new.healthchecks.items()))
    internal = f"; /internal/ on entrypoint {new.internal_entrypoint} only" if new.internal_entrypoint else ""
    # the secret itself is never printed
    marked = "; mirrored copies marked for the comparator" if new.mirror_secret else ""
    sticky = f"; sticky {', '.join(new.sticky)}" if new.sticky else ""
    return [f"* Traefik options: monolith service {new.monolith}; health checks {checks}{internal}{marked}{sticky}"]


def apply_plan(
    etcd: Etcd,
    plan: Plan,
    *,
    dry_run: bool = False,
    moves: LiveMoves = "refuse",
    api: TraefikAPI | None = None,
    who: str | None = None,
    timeout: float = 10.0,
) -> Outcome:
    """Make the route table match the plan in ONE change; idempotent.

    ``Outcome.lines`` says what changes (with ``dry_run``: what would, and
    nothing is written); ``Outcome.moves`` the live routes moved (or that
    would be, or were kept). ``moves`` says what to do with a live route the
    plan would move elsewhere: ``"refuse"`` raises MovesLiveTraffic and writes
    nothing, ``"move"`` moves it, ``"keep"`` leaves it and applies the rest.
    ``Outcome.change`` is None when etcd already matched.
    """
    current, _ = table.load(etcd)
    stored = table.load_options(etcd)
    options = plan_options(plan, stored)
    moving = live_moves(plan, current, desired_routes(plan, current))
    wanted = desired_routes(plan, current, keep_live=moves == "keep")
    lines = diff_lines(plan, dict(current), dict(wanted)) + options_line(stored, options)
    if dry_run:
        return Outcome(None, lines=lines, moves=moving)
    if moving and moves == "refuse":
        raise MovesLiveTraffic(moving)
    if not lines:
        return Outcome(None, lines=lines, moves=moving)
    check_traefik(api)

    def change(routes: Routes) -> Routes:
        # Checked again on the table the write reads: a flip landing meanwhile was never shown.
        new = desired_routes(plan, routes, keep_live=moves == "keep")
        if moves == "refuse" and live_moves(plan, routes, new):
            raise MovesLiveTraffic(live_moves(plan, routes, new))
        return new

    counts = f"{len(wanted)} endpoints, {len(lines)} change(s)"
    outcome = write(etcd, api, change, what=f"plan apply: {counts}",
                    who=who or table.current_user(), timeout=timeout, options=options)
    outcome.moves = moving
    if outcome.change is not None:  # what was really written (the table may have moved meanwhile)
        done = outcome.change
        outcome.lines = diff_lines(plan, done.before, done.after) + options_line(stored, options)
        if moves == "move":
            outcome.moves = live_moves(plan, done.before, done.after)
    return outcome


def agreement(plan: Plan, endpoint: Endpoint, route: Route | None, planned: bool) -> tuple[bool, str]:
    """PURE: whether the plan agrees with ``route`` for ``endpoint``, and a short note why."""
    if not planned:
        return False, "not in the plan; strangler plan apply removes it"
    if route is None:
        return False, "not in etcd yet; run strangler plan apply"
    allowed = allowed_backends(plan, endpoint)
    if not answering_backends(route) <= allowed:
        names = " or ".join(sorted(plan_backend(plan, b) for b in allowed))
        return False, f"the plan lets only {names} answer it; strangler plan apply resets it"
    owner = plan.owner(endpoint)
    if is_frozen(plan, endpoint):
        return True, "frozen on the monolith (new-only)"
    if route.backend == MONOLITH and owner != plan.monolith:
        return True, f"to move to {owner}" if not route.weights else f"moving to {owner}"
    return True, ""


def route_rows(plan: Plan, routes: Routes) -> list[dict[str, Any]]:
    """PURE: one row per endpoint (planned ones in plan order, then unplanned), JSON-ready."""
    planned = plan.endpoints()
    names = {e.endpoint: e.name for e in plan.inventory}
    extra = sorted((ep for ep in routes if ep not in planned), key=lambda e: e.id)
    rows = []
    for endpoint in planned + extra:
        route = routes.get(endpoint)
        agrees, note = agreement(plan, endpoint, route, endpoint in planned)
        weights = route.weights if route else None
        rows.append({
            "endpoint": str(endpoint),
            "method": endpoint.method,
            "path": endpoint.path,
            "name": names.get(endpoint),
            "backend": plan_backend(plan, route.backend) if route else None,
            "weights": {plan_backend(plan, b): w for b, w in weights.items()} if weights else None,
            "mirror": route.mirror if route else None,
            "mirror_percent": route.mirror_percent if route and route.mirror else None,
            "match": ({**route.match.to_dict(), "backend": plan_backend(plan, route.match.backend)}
                      if route and route.match else None),
            "sticky": bool(route and route.sticky),
            "serving": describe(plan, route) if route else "",
            "state": route.state if route else "not applied",
            "owner": plan.owner(endpoint) if endpoint in planned else None,
            "plan_agrees": agrees,
            "note": note,
        })
    return rows
