"""The plan file (``strangler.toml``) as a read-only :class:`Plan`.

``load_plan(path)`` parses the TOML, checks it with
:func:`strangler.plan.schema.check_plan` and builds a Plan that the routing,
stack, compare and migrate parts query (``endpoint``, ``owner``,
``service_endpoints``, ``routes``, ``compare_rule``, ``command``,
``database_url``). docs/plan.md is the reference for every key.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from router.keys import parse_endpoint
from strangler.plan.schema import (
    DEFAULT_HEADERS,
    METHODS,
    PREFIX,
    STACK_DEFAULTS,
    STACK_SETTINGS,
    STRATEGIES,
    Endpoint,
    Problem,
    check_plan,
    normalise_rule,
    parse_endpoint_spec,
)

# what tells two rows under one id apart unless the plan says more (see DataTable)
DEFAULT_IDENTITY = ("created_at",)
# Flack's (and most Flask apps'): the session key and the JWT key, shared by every backend
DEFAULT_SECRETS = ("SECRET_KEY", "JWT_SECRET_KEY")

__all__ = [
    "METHODS",
    "PREFIX",
    "STRATEGIES",
    "Backend",
    "CompareRule",
    "DataTable",
    "Endpoint",
    "InventoryEntry",
    "Plan",
    "PlanError",
    "Problem",
    "Route",
    "Stack",
    "check_plan",
    "load_plan",
    "normalise_rule",
    "parse_endpoint_spec",
]


class PlanError(Exception):
    """A plan that cannot be used: one line saying what to fix."""


@dataclass(frozen=True)
class Stack:
    """Local-stack ports, all on 127.0.0.1 (0 = pick a free port when the stack starts)."""

    web_port: int = STACK_DEFAULTS["web_port"]
    dashboard_port: int = STACK_DEFAULTS["dashboard_port"]
    etcd_port: int = STACK_DEFAULTS["etcd_port"]
    etcd_peer_port: int = STACK_DEFAULTS["etcd_peer_port"]
    redis_port: int = STACK_DEFAULTS["redis_port"]
    internal_port: int = STACK_DEFAULTS["internal_port"]
    console_port: int = STACK_DEFAULTS["console_port"]
    etcd_members: int = STACK_SETTINGS["etcd_members"][0]
    log_max_mb: int = STACK_SETTINGS["log_max_mb"][0]
    log_keep: int = STACK_SETTINGS["log_keep"][0]


@dataclass(frozen=True)
class Backend:
    """The monolith or one extracted service, as the plan declares it."""

    name: str
    command: str
    health: str
    database: str | None = None
    instances: int = 1
    port: int = 0
    app: str | None = None
    tables: tuple[str, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    # endpoints only this service has (new features, service-to-service calls):
    # routed to it from the start under every strategy, never to the monolith
    serves: tuple[Endpoint, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    is_monolith: bool = False
    start: bool = True  # False: declared, but `strangler up` does not start it (not written yet)
    # its database's alembic environment: a folder with env.py (relative to the plan),
    # or the name of one under the project's migrations/ (default: the monolith's is
    # "monolith", a service's its own name)
    migrations: str | None = None
    # its clients hold sessions across requests that must reach one instance: every load
    # balancer and canary of it gets Traefik's sticky cookie (as PREFIX /socket.io/ routes do)
    sticky: bool = False


@dataclass(frozen=True)
class InventoryEntry:
    """One ``[[endpoints]]`` entry: an endpoint of the monolith, found by ``strangler scan``."""

    endpoint: Endpoint
    name: str | None = None
    gone: bool = False
    note: str | None = None


@dataclass(frozen=True)
class CompareRule:
    """How two answers of one endpoint are compared (defaults merged with its own table)."""

    ignore: tuple[str, ...] = ()
    headers: tuple[str, ...] = DEFAULT_HEADERS
    sets: tuple[str, ...] = ()
    shadow_unsafe: bool = False


@dataclass(frozen=True)
class DataTable:
    """One ``[tables.<name>]``: the endpoints that insert its rows (one family per table).

    The routing guards read ``inserted_by``. ``identity``: the columns a
    row never changes once it exists; two rows under one id that differ in
    them are two rows (an id collision), for write-through, the followers,
    copy and verify alike.
    """

    name: str
    inserted_by: tuple[Endpoint, ...] = ()
    identity: tuple[str, ...] = DEFAULT_IDENTITY


class Route(NamedTuple):
    """Where one endpoint goes: ``owner`` in the end, ``initial`` before any flip."""

    endpoint: Endpoint
    owner: str
    initial: str


@dataclass(frozen=True)
class Plan:
    """A checked plan. Build it with :func:`load_plan` (or :meth:`Plan.from_data`)."""

    strategy: str
    run_dir: Path
    monolith: str
    stack: Stack
    backends: Mapping[str, Backend]
    inventory: tuple[InventoryEntry, ...]
    compare_default: CompareRule
    compare: Mapping[Endpoint, CompareRule]
    path: Path | None = None
    tables: Mapping[str, DataTable] = field(default_factory=dict)
    # the secrets `strangler up` generates once per run dir and gives every backend
    secrets: tuple[str, ...] = DEFAULT_SECRETS

    @classmethod
    def from_data(cls, data: Mapping, path: Path | None = None) -> Plan:
        """Build a Plan from parsed TOML; raise PlanError naming the first problem, if any."""
        problems = check_plan(data)
        if problems:
            more = f" ({len(problems) - 1} more; run strangler plan check)" if len(problems) > 1 else ""
            raise PlanError(f"{path or 'plan'}: {problems[0]}{more}")
        base = path.parent if path else Path.cwd()
        head = data.get("strangler", {})
        monolith = head.get("monolith", "monolith")
        backends = {
            name: _build_backend(name, table, name == monolith)
            for name, table in data["backends"].items()
        }
        default = _build_rule(
            {k: v for k, v in data.get("compare", {}).items() if not isinstance(v, Mapping)},
            CompareRule(),
        )
        rules = {
            parse_endpoint_spec(spec): _build_rule(table, default)
            for spec, table in data.get("compare", {}).items()
            if isinstance(table, Mapping)
        }
        return cls(
            strategy=head.get("strategy", "incremental"),
            secrets=tuple(head.get("secrets", DEFAULT_SECRETS)),
            run_dir=(base / head.get("run_dir", ".strangler")).resolve(),
            monolith=monolith,
            stack=Stack(**data.get("stack", {})),
            backends=backends,
            inventory=tuple(
                InventoryEntry(
                    parse_endpoint_spec(e["endpoint"]),
                    e.get("name"),
                    e.get("gone", False),
                    e.get("note"),
                )
                for e in data.get("endpoints", [])
            ),
            compare_default=default,
            compare=rules,
            path=path,
            tables={
                name: DataTable(name, tuple(parse_endpoint_spec(s) for s in t.get("inserted_by", ())),
                                tuple(t.get("identity", DEFAULT_IDENTITY)))
                for name, t in data.get("tables", {}).items()
            },
        )

    @property
    def services(self) -> list[str]:
        """Names of the extracted services (every backend but the monolith), in plan order."""
        return [name for name in self.backends if name != self.monolith]

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint the plan routes: live inventory first, then services' own ones."""
        seen = [e.endpoint for e in self.inventory if not e.gone]
        for name in self.services:
            backend = self.backends[name]
            seen += [ep for ep in (*backend.endpoints, *backend.serves) if ep not in seen]
        return seen

    def endpoint(self, spec_or_name: str | tuple[str, str]) -> Endpoint:
        """Resolve ``"GET /api/users/<id>"`` or the monolith's name ``api.get_user``.

        Raises PlanError with close matches for an unknown or ambiguous one.
        """
        known = self.endpoints()
        if not isinstance(spec_or_name, str):  # any (method, path) pair, e.g. router.keys.Endpoint
            spec_or_name = " ".join(spec_or_name)
        text = spec_or_name.strip()
        try:  # people type it: forgiving about case and spaces
            wanted = parse_endpoint(text)
        except ValueError:
            wanted = None
        if wanted in known:
            return wanted
        named = [e.endpoint for e in self.inventory if e.name == text and not e.gone]
        if len(named) == 1:
            return named[0]
        if named:
            choices = ", ".join(f'"{ep}"' for ep in named)
            raise PlanError(f'"{text}" names {len(named)} endpoints; say which: {choices}')
        words = [str(ep) for ep in known] + sorted({e.name for e in self.inventory if e.name})
        close = difflib.get_close_matches(text, words, n=3, cutoff=0.6)
        hint = ("; did you mean " + " or ".join(f'"{c}"' for c in close) + "?") if close else (
            "; run strangler scan, or see the [[endpoints]] in the plan"
        )
        raise PlanError(f'unknown endpoint "{text}"{hint}')

    def backend(self, name: str) -> Backend:
        """The backend called ``name``; PlanError with close matches for an unknown one."""
        if name in self.backends:
            return self.backends[name]
        close = difflib.get_close_matches(name, list(self.backends), n=3)
        hint = f'; did you mean "{close[0]}"?' if close else f"; backends: {', '.join(self.backends)}"
        raise PlanError(f'unknown backend "{name}"{hint}')

    def service_endpoints(self, name: str) -> list[Endpoint]:
        """Endpoints that backend ``name`` owns; for the monolith, every endpoint no service owns."""
        backend = self.backend(name)
        if backend.is_monolith:
            return [ep for ep in self.endpoints() if self.owner(ep) == name]
        return list(backend.endpoints)

    def owner(self, endpoint: str | tuple[str, str]) -> str:
        """The backend that ``endpoint`` ends up on: the service that owns it, else the monolith."""
        ep = self.endpoint(endpoint)
        for name in self.services:
            if ep in self.backends[name].endpoints or ep in self.backends[name].serves:
                return name
        return self.monolith

    def is_service_only(self, endpoint: str | tuple[str, str]) -> bool:
        """True for an endpoint a service ``serves`` itself: the monolith never answers it."""
        ep = self.endpoint(endpoint)
        return any(ep in self.backends[name].serves for name in self.services)

    def routes(self) -> list[Route]:
        """For each endpoint, its owner and where it is before any flip (what ``plan apply`` sets).

        Everything starts on the monolith, except that an endpoint a service
        ``serves`` itself, and under ``new-only`` any endpoint the monolith does
        not have, starts (and stays) on its service.
        """
        in_monolith = {e.endpoint for e in self.inventory if not e.gone}
        routes = []
        for ep in self.endpoints():
            owner = self.owner(ep)
            new = self.is_service_only(ep) or (
                self.strategy == "new-only" and ep not in in_monolith and not ep.is_prefix)
            routes.append(Route(ep, owner, owner if new else self.monolith))
        return routes

    def inserted_tables(self, endpoint: str | tuple[str, str]) -> list[str]:
        """The tables whose ``inserted_by`` lists ``endpoint`` (``[tables.<name>]``), in plan order."""
        ep = self.endpoint(endpoint)
        return [name for name, t in self.tables.items() if ep in t.inserted_by]

    def migrations(self, name: str) -> str:
        """Backend *name*'s alembic environment: its ``migrations`` (a folder, resolved
        against the plan's), else the project's ``monolith`` or ``<name>`` environment;
        ``""`` when the plan says ``migrations = ""`` (the app keeps its own schema)."""
        given = self.backends[name].migrations
        if given == "":
            return ""
        if given:
            base = self.path.parent if self.path else Path.cwd()
            return str((base / given).resolve())
        return "monolith" if name == self.monolith else name

    def identity(self, table: str) -> tuple[str, ...]:
        """The identity columns of *table* (``[tables.<name>] identity``; default ``created_at``)."""
        rule = self.tables.get(table)
        return rule.identity if rule is not None else DEFAULT_IDENTITY

    def identities(self, tables: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """``{table: identity columns}`` for each of *tables*."""
        return {name: self.identity(name) for name in tables}

    def data_services(self) -> list[str]:
        """Services that own data: a ``database`` and ``tables`` (their rows move out of the monolith)."""
        return [name for name in self.services
                if self.backends[name].database and self.backends[name].tables]

    def compare_rule(self, endpoint: str | tuple[str, str]) -> CompareRule:
        """The compare rule for ``endpoint``: its own ``[compare."..."]`` table over the defaults."""
        return self.compare.get(self.endpoint(endpoint), self.compare_default)

    def database_url(self, name: str) -> str | None:
        """Backend ``name``'s database URL with ``{run_dir}`` and ``{name}`` filled in."""
        backend = self.backend(name)
        if backend.database is None:
            return None
        return backend.database.format(run_dir=self.run_dir, name=name)

    def command(self, name: str, port: int, instance: int = 0, host: str = "127.0.0.1") -> str:
        """Backend ``name``'s start command with every placeholder filled in (split it with shlex)."""
        return self.backend(name).command.format(
            run_dir=self.run_dir, name=name, port=port, instance=instance, host=host
        )


def _build_backend(name: str, t: Mapping, is_monolith: bool) -> Backend:
    return Backend(
        name=name,
        command=t["command"],
        health=t["health"],
        database=t.get("database"),
        instances=t.get("instances", 1),
        port=t.get("port", 0),
        app=t.get("app"),
        tables=tuple(t.get("tables", ())),
        endpoints=tuple(parse_endpoint_spec(s) for s in t.get("endpoints", ())),
        serves=tuple(parse_endpoint_spec(s) for s in t.get("serves", ())),
        env=dict(t.get("env", {})),
        is_monolith=is_monolith,
        start=t.get("start", True),
        migrations=t.get("migrations"),
        sticky=t.get("sticky", False),
    )


def _build_rule(t: Mapping, base: CompareRule) -> CompareRule:
    # Per-endpoint lists add to the defaults; headers replace them (a list of what to compare).
    return CompareRule(
        ignore=base.ignore + tuple(t.get("ignore", ())),
        headers=tuple(t["headers"]) if "headers" in t else base.headers,
        sets=base.sets + tuple(t.get("sets", ())),
        shadow_unsafe=t.get("shadow_unsafe", base.shadow_unsafe),
    )


def parse_plan_text(text: str, source: str = "strangler.toml") -> dict:
    """Parse TOML text; PlanError (one line, with line and column) if it does not parse."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{source}: not valid TOML: {exc}") from None


def read_plan_data(path: str | Path) -> dict:
    """Read and parse the plan file; PlanError if it is missing or does not parse."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{path}: no such plan file (pass --plan or set STRANGLER_PLAN)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read the plan: {exc}") from None
    return parse_plan_text(text, str(path))


def load_plan(path: str | Path) -> Plan:
    """Read, check and build the plan at ``path``; PlanError with a one-line reason otherwise."""
    path = Path(path)
    return Plan.from_data(read_plan_data(path), path.resolve())



