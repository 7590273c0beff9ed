"""The route table: desired state per endpoint, kept in etcd with its history.

Every change writes the new desired state, the Traefik keys derived from it
(only those that differ) and a history record in ONE etcd transaction,
guarded by compare-and-swap on the guard key read with the table, so two
operators cannot lose each other's change and Traefik never sees half a
change. Keys under ``.../loadbalancer/servers/`` (instances, written by the
registry with leases) are never touched here.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from router.etcd import Compare, Etcd, TxnTooLarge
from router.keys import (
    CATCHALL,
    HISTORY_PREFIX,
    LAST_CHANGE_KEY,
    MONOLITH,
    OPTIONS_KEY,
    ROOT,
    ROUTES_PREFIX,
    Endpoint,
    Route,
    endpoint_prefixes,
    history_key,
    is_server_key,
    parse_endpoint,
    route_keys,
    shared_backends,
    shared_keys,
    shared_prefixes,
    state_key,
    traefik_keys,
    traefik_service,
)

Routes = dict[Endpoint, Route]
ChangeFn = Callable[[Routes], Mapping[Endpoint, Route] | Iterable[Route]]


class ConcurrentChange(Exception):
    """Someone else changed the routing between our read and our write."""


class RollbackRefused(Exception):
    """A rollback would silently undo a later change (or there is nothing to undo)."""


class TableTooLarge(Exception):
    """The change needs more etcd operations than the server allows in one transaction."""


@dataclass(frozen=True)
class Options:
    """What traefik_keys() needs besides the routes; stored under OPTIONS_KEY."""

    monolith: str = MONOLITH
    entrypoint: str = "web"
    healthchecks: dict[str, str] = field(default_factory=dict)
    # None: every router on `entrypoint` (a Traefik with one entrypoint). The
    # toolkit's stacks set it, so /internal/ endpoints leave the public one.
    internal_entrypoint: str | None = None
    # The value Traefik marks mirrored copies with (router.keys.MIRROR_HEADER);
    # None: copies go unmarked, and the comparator refuses them all.
    mirror_secret: str | None = field(default=None, repr=False)
    # Blue/green: a backend's own service name -> its sets' Traefik services, the live one
    # first (router.keys.backend_services); absent for a backend with one set under its name.
    sets: dict[str, list[str]] = field(default_factory=dict)
    # the backends (their own service names) declared ``sticky = true`` in the plan
    sticky: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """Serialise for etcd."""
        data: dict[str, Any] = {
            "monolith": self.monolith,
            "entrypoint": self.entrypoint,
            "healthchecks": self.healthchecks,
        }
        if self.internal_entrypoint:
            data["internal_entrypoint"] = self.internal_entrypoint
        if self.mirror_secret:
            data["mirror_secret"] = self.mirror_secret
        if self.sets:
            data["sets"] = self.sets
        if self.sticky:
            data["sticky"] = self.sticky
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Options:
        """Inverse of to_json; None (never initialised) gives the defaults."""
        data = json.loads(text) if text else {}
        return cls(
            monolith=data.get("monolith", MONOLITH),
            entrypoint=data.get("entrypoint", "web"),
            healthchecks=dict(data.get("healthchecks") or {}),
            internal_entrypoint=data.get("internal_entrypoint") or None,
            mirror_secret=data.get("mirror_secret") or None,
            sets={name: list(services) for name, services in (data.get("sets") or {}).items()},
            sticky=sorted(data.get("sticky") or []),
        )

    def service(self, backend: str) -> str:
        """The Traefik service route backend ``backend``'s routers point at (its live set's)."""
        return traefik_service(backend, self.monolith, self.sets)

    def with_live(self, name: str, services: list[str]) -> Options:
        """These options with backend ``name``'s sets (live first); ``[name]`` alone drops the entry."""
        sets = {k: list(v) for k, v in self.sets.items() if k != name}
        if services != [name]:
            sets[name] = list(services)
        return replace(self, sets=sets)

    def route(self, route: Route) -> dict[str, str]:
        """The Traefik keys of one route under these options (router.keys.route_keys)."""
        return route_keys(route, monolith=self.monolith, entrypoint=self.entrypoint,
                          internal_entrypoint=self.internal_entrypoint, mirror_secret=self.mirror_secret,
                          sets=self.sets, sticky=self.sticky)

    def shared(self, routes: Iterable[Route]) -> dict[str, str]:
        """The keys of no one route, for ``routes`` under these options (router.keys.shared_keys)."""
        return shared_keys(routes, monolith=self.monolith, entrypoint=self.entrypoint,
                           internal_entrypoint=self.internal_entrypoint,
                           mirror_secret=self.mirror_secret, healthchecks=self.healthchecks,
                           sets=self.sets, sticky=self.sticky)

    def derive(self, routes: Iterable[Route]) -> dict[str, str]:
        """The Traefik keys for `routes` under these options."""
        return traefik_keys(
            routes,
            monolith=self.monolith,
            entrypoint=self.entrypoint,
            internal_entrypoint=self.internal_entrypoint,
            mirror_secret=self.mirror_secret,
            healthchecks=self.healthchecks,
            sets=self.sets,
            sticky=self.sticky,
        )


@dataclass(frozen=True)
class Change:
    """One recorded change of the table: who did what, and each touched
    endpoint's route before and after (None: not in the table)."""

    id: int
    time: str
    who: str
    what: str
    revision: int
    before: dict[str, Route | None]
    after: dict[str, Route | None]
    rollback_of: int | None = None
    # the Traefik options in force once the change is written (not part of the
    # history record): what confirming the change live needs, without a re-read
    options: Options | None = field(default=None, compare=False, repr=False)

    @property
    def endpoints(self) -> list[str]:
        """The endpoints (as "METHOD /path") this change touched."""
        return sorted(set(self.before) | set(self.after))

    def to_dict(self) -> dict[str, Any]:
        """The history record as stored in etcd (JSON-ready)."""

        def routes(side: dict[str, Route | None]) -> dict[str, Any]:
            return {ep: (r.to_dict() if r else None) for ep, r in sorted(side.items())}

        return {
            "id": self.id,
            "time": self.time,
            "who": self.who,
            "what": self.what,
            "revision": self.revision,
            "rollback_of": self.rollback_of,
            "before": routes(self.before),
            "after": routes(self.after),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], revision: int | None = None) -> Change:
        """Inverse of to_dict; `revision` overrides the stored one."""

        def routes(side: Mapping[str, Any]) -> dict[str, Route | None]:
            return {ep: (Route.from_dict(r) if r else None) for ep, r in side.items()}

        return cls(
            id=int(data["id"]),
            time=data["time"],
            who=data["who"],
            what=data["what"],
            revision=int(revision if revision is not None else data.get("revision", 0)),
            before=routes(data["before"]),
            after=routes(data["after"]),
            rollback_of=data.get("rollback_of"),
        )


def current_user() -> str:
    """``user@host`` of whoever runs this process, for history records."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


who = current_user


def _parse_routes(values: Mapping[str, str]) -> Routes:
    routes = (Route.from_json(text) for text in values.values())
    return {route.endpoint: route for route in routes}


def load(etcd: Etcd) -> tuple[Routes, int]:
    """The desired route per endpoint, and the etcd revision it was read at."""
    entries, revision = etcd.get_prefix_entries(ROUTES_PREFIX)
    return _parse_routes({k: e.value for k, e in entries.items()}), revision


def load_options(etcd: Etcd) -> Options:
    """The stored Traefik options (defaults when the table was never initialised)."""
    return Options.from_json(etcd.get(OPTIONS_KEY))


def _as_routes(result: Mapping[Endpoint, Route] | Iterable[Route]) -> Routes:
    if isinstance(result, Mapping):
        for endpoint, route in result.items():
            if route.endpoint != endpoint:
                raise ValueError(f"route for {route.endpoint} is filed under {endpoint}")
        return dict(result)
    return {route.endpoint: route for route in result}


def apply(
    etcd: Etcd,
    change: ChangeFn | Mapping[Endpoint, Route] | Iterable[Route],
    *,
    who: str,
    what: str,
    options: Options | None = None,
    rollback_of: int | None = None,
    expect_last: int | None = None,
    only: Iterable[Endpoint] | None = None,
) -> Change | None:
    """Change the route table atomically; returns the recorded Change.

    `change` is a function from the current routes (a dict Endpoint -> Route,
    a copy the function may modify) to the new routes, or the new routes
    themselves. Endpoints left out are removed from the table. `options`
    replaces the stored Traefik options. Without `options` (a flip, a
    rollback) only the touched endpoints' keys and the shared ones are derived
    and read; with them (plan apply) every key is, which also repairs keys
    changed behind the table's back. Returns None when nothing would
    change. Raises ConcurrentChange (and writes nothing) when someone else
    changed the table meanwhile, or when `expect_last` is given and is not the
    last history id.

    `only` (with no `options`): the change touches these endpoints alone, so
    only their routes are read and handed to `change` (a flip of one endpoint
    then costs the same in a table of 15 endpoints or 2000); a route it
    returns for any other endpoint raises ValueError. The guard still covers
    the whole table. Shared keys are then added or updated, never deleted.
    """
    partial = None if only is None or options is not None else sorted(set(only), key=lambda e: e.id)
    # One request reads the table (or the routes asked for), its guard and the options:
    # one consistent snapshot.
    prefixes = [ROUTES_PREFIX] if partial is None else []
    keys = [LAST_CHANGE_KEY, OPTIONS_KEY] + [state_key(ep) for ep in partial or ()]
    found, revision = etcd.snapshot(prefixes, keys)
    old = _parse_routes({k: e.value for k, e in found.items() if k.startswith(ROUTES_PREFIX)})
    guard, options_entry = found.get(LAST_CHANGE_KEY), found.get(OPTIONS_KEY)
    last_id = int(guard.value) if guard else 0
    if expect_last is not None and expect_last != last_id:
        raise ConcurrentChange("routing was changed by someone else; re-run the command")
    old_options = Options.from_json(options_entry.value if options_entry else None)
    new_options = options or old_options

    new = _as_routes(change(dict(old)) if callable(change) else change)
    if partial is not None and set(new) - set(partial):
        strays = ", ".join(sorted(str(ep) for ep in set(new) - set(partial)))
        raise ValueError(f"the change returned routes it was not given: {strays}")
    touched = sorted(
        (ep for ep in set(old) | set(new) if old.get(ep) != new.get(ep)), key=lambda e: e.id
    )
    if options is None:
        # A flip: only the touched endpoints' keys and the shared ones can change,
        # so only those are derived and read (a few keys, not the whole tree).
        if not touched:
            return None
        derived, stale_keys, current = _scoped(etcd, old, new, touched, new_options, revision,
                                               whole=partial is None)
    else:
        # plan apply: every key is derived and compared, which also repairs drift.
        derived = new_options.derive(new.values())
        stale_keys = set(old_options.derive(old.values()))
        current = {k: e.value
                   for k, e in etcd.get_prefix_entries(ROOT + "/", revision=revision)[0].items()}
    puts = {k: v for k, v in derived.items() if current.get(k) != v}
    stale = stale_keys - set(derived)
    deletes = [k for k in sorted(stale) if k in current and not _protected(k)]
    if not touched and not puts and not deletes and new_options == old_options:
        return None

    record = Change(
        id=last_id + 1,
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        who=who,
        what=what,
        revision=revision,
        before={str(ep): old.get(ep) for ep in touched},
        after={str(ep): new.get(ep) for ep in touched},
        rollback_of=rollback_of,
    )
    for ep in touched:
        if ep in new:
            puts[state_key(ep)] = new[ep].to_json()
        else:
            deletes.append(state_key(ep))
    if options is not None and options != old_options:
        puts[OPTIONS_KEY] = new_options.to_json()
    puts[history_key(record.id)] = json.dumps(record.to_dict(), sort_keys=True)
    puts[LAST_CHANGE_KEY] = str(record.id)

    compare = Compare(LAST_CHANGE_KEY, guard.mod_revision if guard else 0)
    try:
        written = etcd.txn_revision([compare], puts, deletes)
    except TxnTooLarge as exc:
        raise TableTooLarge(
            f"this change needs {len(puts) + len(deletes)} etcd operations, more than etcd's "
            "--max-txn-ops allows: restart etcd with --max-txn-ops 20000 (strangler up does)"
        ) from exc
    if written is None:
        raise ConcurrentChange("routing was changed by someone else; re-run the command")
    return replace(record, revision=written, options=new_options)


def note(
    etcd: Etcd,
    *,
    who: str,
    what: str,
    puts: Mapping[str, str] | None = None,
    deletes: Iterable[str] = (),
) -> Change:
    """Record a step that moves no route (an instance upgrade) in the history, with its own keys.

    ``puts`` and ``deletes`` are written in the same transaction as the
    record, guarded like :func:`apply`. The record touches no endpoint, so a
    rollback never picks it by default. Raises ConcurrentChange when the
    history moved meanwhile.
    """
    guard = etcd.get_entry(LAST_CHANGE_KEY)
    record = Change(id=(int(guard.value) if guard else 0) + 1,
                    time=datetime.now(UTC).isoformat(timespec="seconds"),
                    who=who, what=what, revision=0, before={}, after={})
    written_puts = {**(puts or {}), history_key(record.id): json.dumps(record.to_dict(), sort_keys=True),
                    LAST_CHANGE_KEY: str(record.id)}
    written = etcd.txn_revision([Compare(LAST_CHANGE_KEY, guard.mod_revision if guard else 0)],
                                written_puts, list(deletes))
    if written is None:
        raise ConcurrentChange("the history was changed by someone else meanwhile; re-run the command")
    return replace(record, revision=written)


def _scoped(etcd: Etcd, old: Routes, new: Routes, touched: Sequence[Endpoint], options: Options,
            revision: int, whole: bool = True) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """The keys ``touched`` endpoints and the shared keys derive to now (in ``new``), the ones
    they derived to before, and what etcd holds under their prefixes, read at ``revision``.

    Whether an endpoint's keys are touched never depends on another endpoint
    (router.keys.route_keys), so the rest of the tree needs neither deriving
    nor reading. Not ``whole`` (``old``/``new`` hold some of the routes
    only): a shared key no longer derived may still be another route's, so
    none is counted as derived before (none is deleted).
    """
    if len({endpoint.id for endpoint in new}) < len(new):
        options.derive(new.values())  # raises the ValueError naming the two endpoints
    derived = options.shared(new.values())
    before = set(options.shared(old.values())) if whole else set()
    prefixes = list(shared_prefixes(
        shared_backends(old.values(), options.monolith, options.healthchecks, options.sets)
        | shared_backends(new.values(), options.monolith, options.healthchecks, options.sets)))
    for endpoint in touched:
        prefixes += endpoint_prefixes(endpoint)
        if endpoint in new:
            derived |= options.route(new[endpoint])
        if endpoint in old:
            before |= set(options.route(old[endpoint]))
    entries, _ = etcd.snapshot(prefixes, revision=revision)
    return derived, before, {k: e.value for k, e in entries.items()}


def _protected(key: str) -> bool:
    # The catch-all must never go (traefik#8092), and instance servers are
    # the registry's, not ours.
    return key.startswith(f"{ROOT}/http/routers/{CATCHALL}/") or is_server_key(key)


def history(etcd: Etcd) -> list[Change]:
    """Every recorded change, oldest first; `revision` is the etcd revision it wrote."""
    entries, _ = etcd.get_prefix_entries(HISTORY_PREFIX)
    changes = [
        Change.from_dict(json.loads(entry.value), revision=entry.create_revision)
        for _, entry in sorted(entries.items())
    ]
    return sorted(changes, key=lambda c: c.id)


def get_change(etcd: Etcd, change_id: int) -> Change | None:
    """The recorded change `change_id` (None when there is none); records never change."""
    entry = etcd.get_entry(history_key(change_id))
    if entry is None:
        return None
    return Change.from_dict(json.loads(entry.value), revision=entry.create_revision)


def cancelled(changes: Iterable[Change]) -> set[int]:
    """Ids of changes whose effect is undone: each live rollback and its target.

    A rollback that was itself rolled back no longer cancels its target.
    """
    gone: set[int] = set()
    for change in sorted(changes, key=lambda c: c.id, reverse=True):
        if change.id not in gone and change.rollback_of is not None:
            gone |= {change.id, change.rollback_of}
    return gone


def in_effect(changes: Iterable[Change]) -> list[Change]:
    """The changes whose effect still stands, oldest first: neither undone nor an undo."""
    changes = sorted(changes, key=lambda c: c.id)
    gone = cancelled(changes)
    return [c for c in changes if c.id not in gone]


def choose(changes: Sequence[Change], change_id: int | None, who: str, anyone: bool = False) -> Change:
    """PURE: the change a rollback by `who` undoes; RollbackRefused (one line) when there is none.

    `change_id` names it; without one it is `who`'s latest change still in
    effect, or with `anyone` the latest change in effect whoever made it.
    Operators sharing a table must not undo each other's work by accident.
    """
    if change_id is not None:
        found = [c for c in changes if c.id == change_id]
        if not found:
            raise RollbackRefused(f"there is no change {change_id}; see the history for ids")
        return found[0]
    live = [c for c in in_effect(changes) if c.endpoints]  # notes (upgrades) move no route
    if not live:
        raise RollbackRefused("there is no change to roll back")
    mine = [c for c in live if c.who == who]
    if anyone or mine:
        return (live if anyone else mine)[-1]
    latest = live[-1]
    raise RollbackRefused(
        f"{who} has no routing change in effect; the latest one is change {latest.id} by "
        f"{latest.who} ({latest.what}): undo it with `strangler rollback {latest.id}` "
        "(or `strangler rollback --any`)"
    )


def rollback(
    etcd: Etcd,
    change_id: int | None = None,
    *,
    who: str,
    force: bool = False,
    anyone: bool = False,
    check: Callable[[Change], None] | None = None,
) -> Change:
    """Undo change `change_id` (default: `who`'s latest change still in effect; see choose()).

    Restores the routes its endpoints had before it, recorded as a new change
    by `who`; rolling back repeatedly walks back through `who`'s changes.
    Refuses (with RollbackRefused, nothing written) when a later change still
    in effect touched any of the same endpoints, or when `check(target)`
    raises (the caller's policy, e.g. the plan's), unless `force`.
    """
    changes = history(etcd)
    target = choose(changes, change_id, who, anyone)
    live = in_effect(changes)
    later = [c for c in live if c.id > target.id and set(c.endpoints) & set(target.endpoints)]
    if later and not force:
        last = later[-1]
        raise RollbackRefused(
            f"change {last.id} ({last.what}) by {last.who} touched the same endpoints after "
            f"change {target.id}; roll back change {last.id} first, or pass --force"
        )
    if check is not None and not force:
        check(target)

    def restore(routes: Routes) -> Routes:
        for spec, route in target.before.items():
            endpoint = parse_endpoint(spec)
            if route is None:
                routes.pop(endpoint, None)
            else:
                routes[endpoint] = route
        return routes

    done = apply(
        etcd,
        restore,
        who=who,
        what=f"roll back change {target.id} ({target.what})",
        rollback_of=target.id,
        expect_last=changes[-1].id,
    )
    if done is None:
        raise RollbackRefused(f"the routes already are as before change {target.id}")
    return done


def initialise(
    etcd: Etcd,
    endpoints: Iterable[Endpoint | str],
    *,
    monolith: str = MONOLITH,
    entrypoint: str = "web",
    healthchecks: Mapping[str, str] | None = None,
    who: str | None = None,
) -> Change | None:
    """Put every endpoint not yet in the table on the monolith, plus the catch-all.

    Idempotent: endpoints already in the table keep their route; returns None
    when there was nothing to write.
    """
    wanted = [e if isinstance(e, Endpoint) else parse_endpoint(e) for e in endpoints]
    options = Options(monolith, entrypoint, dict(healthchecks or {}))

    def add_missing(routes: Routes) -> Routes:
        for endpoint in wanted:
            routes.setdefault(endpoint, Route(endpoint))
        return routes

    return apply(
        etcd,
        add_missing,
        who=who or current_user(),
        what=f"initialise the table with {len(wanted)} endpoints",
        options=options,
    )


class RouteTable:
    """The route table's operations, grouped (each also a module function)."""

    load = staticmethod(load)
    apply = staticmethod(apply)
    history = staticmethod(history)
    rollback = staticmethod(rollback)
    get_change = staticmethod(get_change)
    initialise = staticmethod(initialise)
