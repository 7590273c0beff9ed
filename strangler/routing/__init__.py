"""Routing commands' logic: flip, cutover, rollback and plan apply, with the strategies enforced.

No Click here (``strangler.routing.cli`` is the command line; ``plan apply``
is ``strangler.routing.apply``). Each command resolves what the person named
against the plan, checks it without I/O (strategy, owner, weight, a canary
on an inserting endpoint), then checks the world (a service owning data is
linked, with id lanes for a write canary; a healthy instance is registered;
Traefik's API answers), writes ONE change with
``router.table.apply`` and waits until Traefik's API shows the new routing
live. A refusal raises a :class:`RoutingError` (one line) and writes nothing.

Names: the plan calls the monolith by its backend name (``plan.monolith``);
route-table entries always call it ``"monolith"`` (``router.keys.MONOLITH``),
and the stored options map that to the monolith's Traefik service.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from router import keys, registry, table
from router.etcd import Etcd
from router.keys import MONOLITH, Endpoint, Match, Route, parse_endpoint
from router.traefik import RoutingSpec, TraefikAPI, TraefikError, qualify
from strangler.links import read_links, unlinked
from strangler.plan import Plan
from strangler.promote.records import running_on

Routes = dict[Endpoint, Route]


class RoutingError(Exception):
    """A routing command was refused; the message is one line saying what to do."""


class NotLive(RoutingError):
    """The change is written, but Traefik did not show it live in time."""


@dataclass
class Outcome:
    """What a routing command did: the recorded change (None: nothing to do) and timings.

    ``write_s`` is from the call to the etcd write; ``live_s`` from the write
    until Traefik's API confirmed (None when not waited for). ``lines``: what
    ``plan apply`` changes; ``moves``: the live routes it moves (or would, or
    kept); ``undone``: the change a rollback undid.
    """

    change: table.Change | None
    write_s: float = 0.0
    live_s: float | None = None
    lines: list[str] = field(default_factory=list)
    moves: list[str] = field(default_factory=list)
    undone: table.Change | None = None


# -- names -------------------------------------------------------------------------------------


def route_backend(plan: Plan, name: str) -> str:
    """The route table's name for plan backend ``name`` (PlanError for an unknown one)."""
    return MONOLITH if plan.backend(name).is_monolith else name


def plan_backend(plan: Plan, name: str) -> str:
    """The plan's name for route-table backend ``name`` (the inverse of route_backend)."""
    return plan.monolith if name == MONOLITH else name


def describe(plan: Plan, route: Route) -> str:
    """Who answers ``route``, for people: ``users``, ``monolith 90% / users 10%`` (+ shadow)."""
    if route.weights:
        total = sum(route.weights.values())
        text = " / ".join(
            f"{plan_backend(plan, b)} {round(100 * w / total)}%"
            for b, w in sorted(route.weights.items(), key=lambda item: -item[1])
        )
    else:
        text = plan_backend(plan, route.backend)
    if route.weights and route.sticky:
        text += " (sticky)"
    if route.match:
        text += f"; {route.match} -> {plan_backend(plan, route.match.backend)}"
    if not route.mirror:
        return text
    share = "" if route.mirror_percent == 100 else f" of {route.mirror_percent}%"
    return f"{text} (copy{share} to {route.mirror})"


# -- pure checks -------------------------------------------------------------------------------


def parse_weight(text: str | int | None) -> int | None:
    """``--weight``: a whole percentage 1..99 for the target backend, or None when not given."""
    if text is None:
        return None
    raw = str(text).strip().removesuffix("%")
    if not raw.isdigit() or not 1 <= int(raw) <= 99:
        raise RoutingError(
            f"{text!r} is not a whole percentage from 1 to 99; "
            "flip without --weight to move all traffic"
        )
    return int(raw)


def resolve(plan: Plan, specs: Sequence[str] = (), service: str | None = None) -> list[Endpoint]:
    """The endpoints named by ``specs`` (``"GET /x"`` or a Flask name) or owned by ``service``.

    Raises PlanError with close matches for an unknown endpoint or backend.
    """
    if service is not None and specs:
        raise RoutingError("name endpoints or --service, not both")
    if service is not None:
        found = plan.service_endpoints(service)
        if not found:
            raise RoutingError(f"the plan gives no endpoints to {service}")
        return found
    if not specs:
        raise RoutingError('name an endpoint (e.g. "GET /api/users/<id>") or --service NAME')
    resolved: list[Endpoint] = []
    for spec in specs:
        endpoint = plan.endpoint(spec)
        if endpoint not in resolved:
            resolved.append(endpoint)
    return resolved


def is_frozen(plan: Plan, endpoint: Endpoint) -> bool:
    """Under new-only: True for the monolith's own endpoints, which never move."""
    return plan.strategy == "new-only" and endpoint in {
        e.endpoint for e in plan.inventory if not e.gone
    }


def answering_backends(route: Route) -> set[str]:
    """PURE: the route-table backends that answer users' requests of ``route`` (not its mirror)."""
    return {route.backend, *(route.weights or {})} | ({route.match.backend} if route.match else set())


def allowed_backends(plan: Plan, endpoint: Endpoint) -> set[str]:
    """Route-table backends the plan lets answer ``endpoint``: the monolith and/or its owner."""
    owner = route_backend(plan, plan.owner(endpoint))
    if is_frozen(plan, endpoint):
        return {MONOLITH}
    if plan.is_service_only(endpoint) or (plan.strategy == "new-only" and not endpoint.is_prefix):
        return {owner}  # a new endpoint: the monolith has nothing to serve it with
    return {MONOLITH, owner}


def check_flip(plan: Plan, endpoints: Iterable[Endpoint], target: str) -> None:
    """Refuse a flip of ``endpoints`` to plan backend ``target`` the strategy or plan forbids."""
    if plan.strategy == "big-bang":
        raise RoutingError(
            "strategy big-bang moves every endpoint at once: use strangler cutover --all "
            '(and strangler rollback), or set strategy = "incremental" in the plan'
        )
    wanted = route_backend(plan, target)
    for endpoint in endpoints:
        if is_frozen(plan, endpoint):
            raise RoutingError(
                f"{endpoint} is the monolith's, and strategy new-only freezes the monolith's "
                'endpoints on it; set strategy = "incremental" in the plan to move it'
            )
        if wanted not in allowed_backends(plan, endpoint):
            owner = plan.owner(endpoint)
            why = (
                f"the monolith has no {endpoint}; under new-only it is served by {owner}"
                if wanted == MONOLITH
                else f"the plan gives {endpoint} to {owner}, not {target}; change its owner in the plan"
            )
            raise RoutingError(why)


def check_canary(plan: Plan, endpoints: Iterable[Endpoint], weight: int | None,
                 links: Mapping[str, Mapping] | None = None) -> None:
    """Refuse a canary (``weight``) on an endpoint that inserts rows, unless ids cannot collide.

    Both backends insert, each into its own database. That is safe once the
    table's link gives each database its own id lane (``lanes`` in the link
    record, set by ``strangler up``; see datalink.ids); without
    lanes both would hand out the same ids. *links*: the link records.
    """
    if weight is None:
        return
    for endpoint in endpoints:
        for name in plan.inserted_tables(endpoint):
            owner = next((s for s in plan.data_services() if name in plan.backend(s).tables), None)
            if not (links or {}).get(owner, {}).get("lanes"):
                raise RoutingError(
                    f"a canary on {endpoint} would insert {name} from two databases without id lanes "
                    "(ids could collide); run `strangler up` to link them with one lane each, "
                    "or flip it whole")


def default_sticky(endpoint: Endpoint) -> bool:
    """PURE: whether a canary of ``endpoint`` is sticky unless told: yes for a prefix endpoint
    (pages' static files, Socket.IO), whose requests from one user belong together."""
    return endpoint.is_prefix


def flipped(route: Route, target: str, weight: int | None, *, match: Match | None = None,
            sticky: bool | None = None) -> Route:
    """PURE: ``route`` moved to route backend ``target`` (all traffic, or ``weight`` % of it),
    or, with ``match``, only the requests matching it (an A/B route; the rest stays).

    A canary keeps the rest on the backend that answers now, sticky when
    ``sticky`` says so (None: :func:`default_sticky`). The shadow mirror is
    left as it is: flips change who answers, not who gets a copy. A flip
    whole or a canary replaces an A/B route; an A/B route keeps a canary.
    """
    if match is not None:
        if target == route.backend and not route.weights:
            raise RoutingError(
                f"{route.endpoint} is served by {target} already; an A/B route sends matching "
                "requests elsewhere: give that backend with --to")
        return Route(route.endpoint, route.backend, weights=route.weights, mirror=route.mirror,
                     candidate=route.candidate, match=match, sticky=route.sticky,
                     mirror_percent=route.mirror_percent)
    if weight is None:
        return Route(route.endpoint, target, mirror=route.mirror, candidate=route.candidate,
                     mirror_percent=route.mirror_percent)
    if target == route.backend:
        raise RoutingError(
            f"{route.endpoint} is served by {target} already; "
            "to send part of it elsewhere, give that backend with --to and --weight"
        )
    weights = {target: weight, route.backend: 100 - weight}
    keep = default_sticky(route.endpoint) if sticky is None else sticky
    return Route(route.endpoint, route.backend, weights=weights, mirror=route.mirror,
                 candidate=route.candidate, sticky=keep, mirror_percent=route.mirror_percent)


# -- the world ---------------------------------------------------------------------------------


def check_healthy(etcd: Etcd, plan: Plan, backends: Iterable[str], timeout: float = 3.0) -> None:
    """Refuse unless every plan backend in ``backends`` has a registered instance answering health.

    The probes run in parallel and a healthy instance answers in milliseconds, so
    the timeout costs only when an instance is hung; 3 s, not 1 s, because a busy
    instance on a loaded machine (four writers, two cores) took over a second.
    """
    missing = [
        name
        for name in dict.fromkeys(backends)
        if not registry.healthy_instances(etcd, name, timeout=timeout)
    ]
    if missing:
        names = ", ".join(missing)
        one = "instance of" if len(missing) == 1 else "instance of any of"
        raise RoutingError(
            f"no healthy {one} {names} is registered; start it (strangler up) and retry"
        )


def check_linked(etcd: Etcd, plan: Plan, backends: Iterable[str]) -> None:
    """Refuse moving traffic to a service that owns data not linked with the monolith's yet.

    Linked means its tables were copied out of the monolith's database and
    are kept in sync both ways (``strangler up`` does it and records it in
    etcd, see strangler.links); otherwise the service would answer
    from, and write to, a database that misses the monolith's rows.
    """
    services = [name for name in backends if not plan.backend(name).is_monolith]
    if not services or not any(name in plan.data_services() for name in services):
        return
    missing = unlinked(plan, services, read_links(etcd))
    if missing:
        name = missing[0]
        tables = ", ".join(plan.backend(name).tables)
        whose = f"{name}'" if name.endswith("s") else f"{name}'s"
        raise RoutingError(
            f"{whose} tables ({tables}) are not linked with the monolith's yet: run `strangler up` "
            f"first (it copies them like `strangler migrate copy {name}` and keeps both sides in sync)"
        )


def check_not_promoting(etcd: Etcd, endpoints: Iterable[Endpoint]) -> None:
    """Refuse moving an endpoint a promotion is carrying: its next step would undo the flip."""
    holder = running_on(etcd, [str(e) for e in endpoints])
    if holder is not None:
        raise RoutingError(f"promotion {holder} is moving these endpoints; wait for it (strangler "
                           "promotions) or stop it with strangler promote --abort")


def check_traefik(api: TraefikAPI | None) -> None:
    """Refuse before writing when Traefik's API cannot confirm the change afterwards."""
    if api is None:
        return
    try:
        api.overview()
    except TraefikError:
        raise RoutingError(
            f"Traefik's API at {api.base_url} is not answering, so the change could not be "
            "confirmed; nothing was changed: start the stack (strangler up), pass "
            "--traefik-api, or --no-wait"
        ) from None


def expectation(routes: Iterable[Route], options: table.Options) -> RoutingSpec:
    """PURE: what Traefik's API must show for ``routes``: router -> service, or weights.

    ``router.keys`` names Traefik's services; this only says which monolith.
    """
    return keys.live_spec(routes, options.monolith, options.sets)


def confirm(etcd: Etcd, api: TraefikAPI | None, change: table.Change, timeout: float) -> float | None:
    """Wait until Traefik routes as ``change`` left things; seconds it took (None: not asked)."""
    if api is None:
        return None
    present = [r for r in change.after.values() if r is not None]
    gone = [parse_endpoint(spec).id for spec, r in change.after.items() if r is None]
    spec = expectation(present, change.options or table.load_options(etcd))
    try:
        took = api.wait_live(spec, timeout=timeout) if spec else 0.0
        if gone:
            start = time.monotonic()
            api.wait_live(
                lambda routers, _services: not any(qualify(g) in routers for g in gone),
                timeout=timeout,
            )
            took += time.monotonic() - start
    except TraefikError as exc:
        raise NotLive(
            f"change {change.id} is written to etcd, but {exc}; "
            f"see Traefik's log, or undo it with strangler rollback {change.id}"
        ) from None
    return took


def write(
    etcd: Etcd,
    api: TraefikAPI | None,
    change: table.ChangeFn,
    *,
    what: str,
    who: str,
    timeout: float,
    options: table.Options | None = None,
    only: Sequence[Endpoint] | None = None,
) -> Outcome:
    """Apply ``change`` (see router.table.apply; ``only``: the endpoints it touches, whose routes
    alone are read) and confirm it live; returns the Outcome."""
    start = time.monotonic()
    done = table.apply(etcd, change, who=who, what=what, options=options, only=only)
    outcome = Outcome(done, write_s=time.monotonic() - start)
    if done is not None:
        outcome.live_s = confirm(etcd, api, done, timeout)
    return outcome


# -- commands ----------------------------------------------------------------------------------


def flip(
    etcd: Etcd,
    plan: Plan,
    endpoints: Sequence[Endpoint],
    target: str,
    *,
    weight: int | None = None,
    match: str | None = None,
    cookie: str | None = None,
    sticky: bool | None = None,
    api: TraefikAPI | None = None,
    who: str | None = None,
    timeout: float = 10.0,
) -> Outcome:
    """Move ``endpoints`` to plan backend ``target`` (``weight`` %: a canary) in ONE change.

    ``match`` (``"X-Canary: 1"``) or ``cookie`` (``"name=value"``) makes it an
    A/B route: only requests carrying that header or cookie go to ``target``.
    ``sticky``: a canary's users stay on one side (None: default_sticky).
    Refuses (RoutingError, nothing written) what the strategy or plan
    forbids, a canary on an endpoint that inserts rows, a service whose
    data is not linked with the monolith's, a backend without a healthy
    registered instance, endpoints not
    in the table yet, and an unreachable Traefik API (when ``api`` is given).
    """
    check_flip(plan, endpoints, target)
    check_not_promoting(etcd, endpoints)
    wanted = route_backend(plan, target)
    ab = parse_match(wanted, match, cookie, weight)
    if weight is not None or ab is not None:  # both split inserts between two databases
        check_canary(plan, endpoints, weight or 0, read_links(etcd))
    check_linked(etcd, plan, [target])
    check_healthy(etcd, plan, [target])
    check_traefik(api)

    def change(routes: Routes) -> Routes:
        for endpoint in endpoints:
            if endpoint not in routes:
                raise RoutingError(f"{endpoint} is not in the routing table yet; run strangler plan apply")
            routes[endpoint] = flipped(routes[endpoint], wanted, weight, match=ab, sticky=sticky)
        return routes

    share = f"{weight}% of " if weight is not None else f"requests with {ab} of " if ab else ""
    what = f"flip {share}{summary(endpoints)} to {target}"
    return write(etcd, api, change, what=what, who=who or table.current_user(), timeout=timeout,
                 only=endpoints)


def parse_match(backend: str, header: str | None, cookie: str | None,
                weight: int | None = None) -> Match | None:
    """``--header``/``--cookie`` as a Match for route backend ``backend`` (None: neither given);
    RoutingError (one line) for both, with ``weight``, or malformed."""
    if header is not None and cookie is not None:
        raise RoutingError("give --header or --cookie, not both")
    if (header is not None or cookie is not None) and weight is not None:
        raise RoutingError("an A/B route (--header/--cookie) takes no --weight: "
                           "matching requests all go to --to")
    try:
        if header is not None:
            return keys.parse_header_match(backend, header)
        if cookie is not None:
            return keys.parse_cookie_match(backend, cookie)
    except ValueError as exc:
        raise RoutingError(str(exc)) from None
    return None


def cutover_all(
    etcd: Etcd,
    plan: Plan,
    *,
    api: TraefikAPI | None = None,
    who: str | None = None,
    timeout: float = 10.0,
) -> Outcome:
    """big-bang: move every endpoint a service owns to that service in ONE change.

    Refused under the other strategies, and unless every owning service has
    a healthy registered instance and every one owning data is linked. ``strangler rollback`` undoes it whole.
    """
    if plan.strategy != "big-bang":
        raise RoutingError(
            f"cutover --all is for strategy big-bang; under {plan.strategy} move endpoints "
            "with strangler flip (one at a time, or --service NAME)"
        )
    moves = {r.endpoint: r.owner for r in plan.routes() if r.owner != plan.monolith}
    if not moves:
        raise RoutingError("the plan gives no endpoint to a service; nothing to cut over")
    check_linked(etcd, plan, moves.values())
    check_healthy(etcd, plan, moves.values())
    check_traefik(api)

    def change(routes: Routes) -> Routes:
        for endpoint, owner in moves.items():
            if endpoint not in routes:
                raise RoutingError(f"{endpoint} is not in the routing table yet; run strangler plan apply")
            routes[endpoint] = flipped(routes[endpoint], owner, None)
        return routes

    services = ", ".join(dict.fromkeys(moves.values()))
    what = f"cutover --all: {len(moves)} endpoints to {services}"
    return write(etcd, api, change, what=what, who=who or table.current_user(), timeout=timeout)


def rollback(
    etcd: Etcd,
    change_id: int | None = None,
    *,
    plan: Plan | None = None,
    force: bool = False,
    anyone: bool = False,
    api: TraefikAPI | None = None,
    who: str | None = None,
    timeout: float = 10.0,
) -> Outcome:
    """Undo ``who``'s latest change still in effect (or ``change_id``; ``anyone``: whoever's).

    ``who`` defaults to the caller (router.table.current_user), and the undo
    is recorded as a new change by them; ``Outcome.undone`` is the change
    undone, with its author. No health check: a rollback is the way out of
    trouble, usually back to the monolith. Raises RollbackRefused (from
    router.table) when the caller has no change in effect, or the undo would
    undo a later change too, and RoutingError when ``plan`` no longer allows
    where the undo would put an endpoint (check_undo) — both unless ``force``.
    """
    check_traefik(api)
    start = time.monotonic()
    check = (lambda target: check_undo(plan, target)) if plan is not None else None
    done = table.rollback(etcd, change_id, who=who or table.current_user(), force=force,
                          anyone=anyone, check=check)
    outcome = Outcome(done, write_s=time.monotonic() - start)
    outcome.undone = table.get_change(etcd, done.rollback_of) if done.rollback_of else None
    outcome.live_s = confirm(etcd, api, done, timeout)
    return outcome


def check_undo(plan: Plan, change: table.Change) -> None:
    """Refuse undoing ``change`` when the plan no longer allows where it would put an endpoint.

    The undo restores each endpoint's route from before ``change``; one left
    out of the table is answered by the catch-all, i.e. the monolith. The
    backends allowed are the flip guards' (allowed_backends), so an undo can
    never do what ``strangler plan apply`` would reset at once.
    """
    planned = set(plan.endpoints())
    for spec, route in sorted(change.before.items()):
        endpoint = parse_endpoint(spec)
        if endpoint not in planned:
            if route is None:
                continue  # it leaves the table, as the plan wants
            raise RoutingError(
                f"undoing change {change.id} would put {endpoint} back in the routing table, but "
                "the plan no longer has it; pass --force to undo it anyway"
            )
        answering = answering_backends(route) if route else {MONOLITH}
        allowed = allowed_backends(plan, endpoint)
        if not answering <= allowed:
            names = " and ".join(sorted(plan_backend(plan, b) for b in answering - allowed))
            only = " or ".join(sorted(plan_backend(plan, b) for b in allowed))
            raise RoutingError(
                f"undoing change {change.id} would send {endpoint} to {names}, which the plan no "
                f"longer allows (only {only}); change the plan, or pass --force to undo it anyway"
            )


def summary(endpoints: Sequence[Endpoint]) -> str:
    """PURE: a short name for a list of endpoints, for history records."""
    if len(endpoints) <= 2:
        return " and ".join(str(e) for e in endpoints)
    return f"{len(endpoints)} endpoints ({endpoints[0]}, ...)"
