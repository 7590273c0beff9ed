"""What a plan file may say: the endpoint grammar and ``check_plan``.

Pure functions over parsed TOML, no I/O: ``check_plan(data)`` returns every
problem, each with the key path it is about, so ``strangler plan check`` can
list them all at once. :mod:`strangler.plan` builds the read-only Plan on top.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Mapping
from typing import NamedTuple

# One endpoint type and one parser for the plan and the router: a plan's
# endpoints are the route table's keys, so they must hash and print alike.
from router.keys import METHODS, PREFIX, Endpoint, parse_endpoint

__all__ = [
    "DEFAULT_HEADERS", "METHODS", "PREFIX", "STACK_DEFAULTS", "STACK_SETTINGS", "STRATEGIES", "Endpoint",
    "Problem", "check_plan", "normalise_rule", "parse_endpoint_spec",
]

STRATEGIES = ("new-only", "incremental", "big-bang")
DEFAULT_HEADERS = ("Content-Type", "Location", "WWW-Authenticate")
STACK_DEFAULTS = {
    "web_port": 8000,
    "dashboard_port": 8081,
    "etcd_port": 23790,
    "etcd_peer_port": 23800,
    "redis_port": 63790,
    # Traefik's internal entrypoint (services' calls, /internal/ paths): 0 = any free port.
    "internal_port": 0,
    # the console (strangler console): loopback only
    "console_port": 8082,
}
# The stack's other settings: name -> (default, lowest, highest).
STACK_SETTINGS = {
    "etcd_members": (1, 1, 7),  # etcd members on loopback: 3 or 5 survive losing 1 or 2
    "log_max_mb": (50, 1, 10240),  # a log over this many MB is rotated by the supervisor
    "log_keep": (3, 1, 50),  # rotated copies kept per log
}

# A Flask placeholder, with or without a converter: <id>, <int:id>, <any(a, b):kind>.
_VAR = re.compile(r"<(?:(?P<conv>[A-Za-z_]\w*)(?:\([^<>]*\))?:)?(?P<var>[A-Za-z_]\w*)>")


class Problem(NamedTuple):
    """One thing wrong with a plan: the key path it is about and what to fix."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def normalise_rule(rule: str) -> str:
    """Turn a Flask rule into a path template: ``<int:id>`` becomes ``<id>``.

    The ``path`` converter is kept (``<path:name>``) because it also matches
    slashes, which the router's rule must know.
    """
    return _VAR.sub(
        lambda m: f"<path:{m['var']}>" if m["conv"] == "path" else f"<{m['var']}>", rule
    )


def parse_endpoint_spec(spec: str) -> Endpoint:
    """Parse ``"METHOD /path/<var>"`` as a plan file spells it (converters are dropped).

    :func:`router.keys.parse_endpoint` in strict mode: upper-case method,
    one space. ValueError says what is wrong.
    """
    return parse_endpoint(spec, strict=True)


# --- checking ------------------------------------------------------------------------------
# A table's schema: key -> (kind, None if optional else the hint for a missing key).
_KINDS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "strs": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "env": (lambda v: isinstance(v, Mapping) and all(isinstance(x, str) for x in v.values()),
            "a table of strings"),
    "table": (lambda v: isinstance(v, Mapping), "a table"),
    "tables": (lambda v: isinstance(v, list) and all(isinstance(x, Mapping) for x in v),
               "an array of tables ([[endpoints]])"),
}
_TOP = {
    "strangler": ("table", None),
    "stack": ("table", None),
    "backends": ("table", "declare at least the monolith: [backends.monolith]"),
    "endpoints": ("tables", None),
    "compare": ("table", None),
    "tables": ("table", None),
}
_STRANGLER = {"strategy": ("str", None), "run_dir": ("str", None), "monolith": ("str", None),
              "secrets": ("strs", None)}
_STACK = {name: ("int", None) for name in (*STACK_DEFAULTS, *STACK_SETTINGS)}
_BACKEND = {
    "command": ("str", 'say how to start it, e.g. "gunicorn -c python:pkg.gunicorn_conf pkg.wsgi:app"'),
    "health": ("str", 'give its health-check path, e.g. "/healthz"'),
    "database": ("str", None),
    "instances": ("int", None),
    "port": ("int", None),
    "app": ("str", None),
    "tables": ("strs", None),
    "endpoints": ("strs", None),
    "serves": ("strs", None),
    "env": ("env", None),
    "start": ("bool", None),
    "migrations": ("str", None),
    "sticky": ("bool", None),
}
_ENTRY = {"endpoint": ("str", 'e.g. "GET /api/users/<id>"'), "name": ("str", None),
          "gone": ("bool", None), "note": ("str", None)}
_TABLE = {"inserted_by": ("strs", 'name the endpoints that insert its rows, e.g. ["POST /api/users"]'),
          "identity": ("strs", None)}
_RULE = {"ignore": ("strs", None), "headers": ("strs", None), "sets": ("strs", None),
         "shadow_unsafe": ("bool", None)}
_COMMAND_FIELDS = ("port", "host", "name", "run_dir", "instance")
_DATABASE_FIELDS = ("run_dir", "name")
_JSON_PATH = re.compile(r"(?:[^.\[\]\s]+|\[(?:\*|\d+)\])(?:\.[^.\[\]\s]+|\[(?:\*|\d+)\])*")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _kp(*parts: str | int) -> str:
    """A TOML key path: ``backends.users.endpoints[2]``, ``compare."GET /api/users"``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else '"' + part.replace('"', '\\"') + '"'
            out += ("." if out else "") + key
    return out


def _fields(problems: list[Problem], table: object, path: tuple, spec: dict) -> dict:
    """Report unknown, missing and mistyped keys of ``table``; return its well-typed keys."""
    if not isinstance(table, Mapping):
        problems.append(Problem(_kp(*path), "must be a table"))
        return {}
    good = {}
    for key, value in table.items():
        if key not in spec:
            close = difflib.get_close_matches(key, list(spec), n=1)
            hint = f'did you mean "{close[0]}"?' if close else "expected one of: " + ", ".join(spec)
            problems.append(Problem(_kp(*path, key), f"unknown key; {hint}"))
        elif _KINDS[spec[key][0]][0](value):
            good[key] = value
        else:
            problems.append(Problem(_kp(*path, key), f"must be {_KINDS[spec[key][0]][1]}"))
    for key, (_, hint) in spec.items():
        if hint and key not in table:
            problems.append(Problem(_kp(*path, key), f"missing; {hint}"))
    return good


def _endpoint(problems: list[Problem], path: tuple, text: str) -> Endpoint | None:
    """Parse an endpoint string, reporting a malformed or non-normal one at ``path``."""
    try:
        ep = parse_endpoint_spec(text)
    except ValueError as exc:
        problems.append(Problem(_kp(*path), str(exc)))
        return None
    if str(ep) != text:
        problems.append(Problem(_kp(*path), f'write "{ep}" (placeholders without converters)'))
    return ep


def _placeholders(problems: list[Problem], path: tuple, text: str | None, allowed: tuple) -> str | None:
    """Check ``{placeholders}`` in ``text``; return it filled with samples, None if bad."""
    if text is None:
        return None
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        problems.append(Problem(_kp(*path), f"bad braces ({exc}); write {{{{ }}}} for literal ones"))
        return None
    for name in names:
        if name not in allowed:
            known = ", ".join("{" + a + "}" for a in allowed)
            problems.append(Problem(_kp(*path), f"unknown placeholder {{{name}}}; use {known}"))
            return None
    return text.format(**{a: f"/sample/{a}" for a in allowed})


def _port(problems: list[Problem], path: tuple, port: int, used: dict[int, str]) -> None:
    if port == 0:
        return
    where = _kp(*path)
    if not 1024 <= port <= 65535:
        problems.append(Problem(where, f"{port} is not a usable port; use 1024-65535, or 0 for a free one"))
    elif port in used:
        problems.append(Problem(where, f"port {port} is also {used[port]}"))
    else:
        used[port] = where


def check_plan(data: Mapping) -> list[Problem]:
    """Every problem in parsed plan ``data``, each naming its key path; [] for a good plan."""
    problems: list[Problem] = []
    top = _fields(problems, data, (), _TOP)
    head = _fields(problems, top.get("strangler", {}), ("strangler",), _STRANGLER)
    strategy = head.get("strategy", "incremental")
    if strategy not in STRATEGIES:
        problems.append(Problem("strangler.strategy",
                                f'unknown strategy "{strategy}"; use one of: {", ".join(STRATEGIES)}'))
    if head.get("run_dir") == "":
        problems.append(Problem("strangler.run_dir", 'empty; e.g. ".strangler"'))
    stack = _fields(problems, top.get("stack", {}), ("stack",), _STACK)
    ports: dict[int, str] = {}
    for key in STACK_DEFAULTS:
        _port(problems, ("stack", key), stack.get(key, STACK_DEFAULTS[key]), ports)
    for key, (default, lowest, highest) in STACK_SETTINGS.items():
        value = stack.get(key, default)
        if isinstance(value, int) and not lowest <= value <= highest:
            problems.append(Problem(f"stack.{key}", f"{value} is out of range; give {lowest} to {highest}"))
    inventory = _check_inventory(problems, top.get("endpoints", []))
    owned = _check_backends(problems, top.get("backends"), head.get("monolith", "monolith"),
                            strategy, inventory, ports)
    _check_compare(problems, top.get("compare", {}), inventory, owned)
    _check_tables(problems, top.get("tables", {}), top.get("backends"), inventory, owned)
    return problems


def _check_inventory(problems: list[Problem], entries: list) -> dict[Endpoint, bool]:
    """Check ``[[endpoints]]``; return each listed endpoint and whether it is gone."""
    index: dict[Endpoint, int] = {}
    gone: dict[Endpoint, bool] = {}
    for i, raw in enumerate(entries):
        entry = _fields(problems, raw, ("endpoints", i), _ENTRY)
        ep = _endpoint(problems, ("endpoints", i, "endpoint"), entry["endpoint"]) if "endpoint" in entry else None
        if ep is None:
            continue
        if ep.is_prefix:
            problems.append(Problem(_kp("endpoints", i, "endpoint"),
                                    "the inventory holds the monolith's routes; declare a PREFIX in a service's endpoints"))
        elif ep in index:
            problems.append(Problem(_kp("endpoints", i, "endpoint"),
                                    f'"{ep}" is listed twice (also endpoints[{index[ep]}])'))
        else:
            index[ep] = i
            gone[ep] = entry.get("gone", False)
    return gone


def _check_backends(problems: list[Problem], backends: Mapping | None, monolith: str, strategy: str,
                    inventory: dict[Endpoint, bool], ports: dict[int, str]) -> dict[Endpoint, str]:
    """Check ``[backends.*]``; return each service-owned endpoint and its owner."""
    if not backends:
        if isinstance(backends, Mapping):  # present but empty; a missing key is reported already
            problems.append(Problem("backends", f"empty; declare at least the monolith: [backends.{monolith}]"))
        return {}
    if monolith not in backends:
        problems.append(Problem("strangler.monolith", f'"{monolith}" is not a backend; add '
                                f"[backends.{monolith}] or name one of: {', '.join(backends)}"))
    mono_tables = backends.get(monolith, {}).get("tables") if isinstance(backends.get(monolith), Mapping) else None
    owned: dict[Endpoint, str] = {}
    table_owner: dict[str, str] = {}
    for name, raw in backends.items():
        path = ("backends", name)
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
            problems.append(Problem(_kp(*path), "name backends with lower-case letters, digits, - and _ "
                                    "(they name Traefik services and etcd keys)"))
        b = _fields(problems, raw, path, _BACKEND)
        _check_backend_values(problems, path, b, name == monolith, ports)
        if name == monolith:
            for key in ("endpoints", "serves"):
                if key in b:
                    problems.append(Problem(_kp(*path, key),
                                            "the monolith serves every endpoint no service owns; remove this key"))
            continue
        for i, table in enumerate(b.get("tables", [])):
            if table in table_owner:
                problems.append(Problem(_kp(*path, "tables", i), f'table "{table}" is also owned by {table_owner[table]}'))
            elif mono_tables is not None and strategy != "new-only" and table not in mono_tables:
                problems.append(Problem(_kp(*path, "tables", i),
                                        f'"{table}" is not a table of the monolith (backends.{monolith}.tables)'))
            table_owner.setdefault(table, name)
        for key in ("endpoints", "serves"):
            for i, text in enumerate(b.get(key, [])):
                at = path + (key, i)
                ep = _endpoint(problems, at, text)
                if ep is None:
                    continue
                if ep in owned:
                    problems.append(Problem(_kp(*at), f'"{ep}" is also owned by {owned[ep]}'))
                    continue
                owned[ep] = f"{name} ({_kp(*at)})"
                if key == "endpoints":
                    _check_strategy(problems, at, ep, strategy, inventory)
                elif inventory.get(ep) is False:
                    problems.append(Problem(_kp(*at), f'"{ep}" is an endpoint of the monolith; list it '
                                            "under endpoints to move it there"))
    return owned


def _check_backend_values(problems: list[Problem], path: tuple, b: dict, is_monolith: bool,
                          ports: dict[int, str]) -> None:
    if "command" in b and not b["command"].strip():
        problems.append(Problem(_kp(*path, "command"), "empty; say how to start this backend"))
    _placeholders(problems, path + ("command",), b.get("command"), _COMMAND_FIELDS)
    if "health" in b and not b["health"].startswith("/"):
        problems.append(Problem(_kp(*path, "health"), 'must be a path starting with /, e.g. "/healthz"'))
    url = _placeholders(problems, path + ("database",), b.get("database"), _DATABASE_FIELDS)
    if url is not None and not re.match(r"[a-z][a-z0-9+]*://", url):
        problems.append(Problem(_kp(*path, "database"),
                                'not a database URL; e.g. "sqlite:///{run_dir}/data/users.sqlite"'))
    instances = b.get("instances", 1)
    if instances < 1:
        problems.append(Problem(_kp(*path, "instances"), "must be at least 1"))
    for i in range(max(1, instances) if b.get("port") else 0):
        _port(problems, path + ("port",), b["port"] + i, ports)
    if "app" in b and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", b["app"]):
        problems.append(Problem(_kp(*path, "app"), 'write "module:factory", e.g. "monolith:create_app"'))
    elif is_monolith and "app" not in b:
        problems.append(Problem(_kp(*path, "app"),
                                'missing; strangler scan needs the app factory, e.g. "monolith:create_app"'))
    for key in b.get("env", {}):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            problems.append(Problem(_kp(*path, "env", key), "not an environment variable name"))


def _check_strategy(problems: list[Problem], at: tuple, ep: Endpoint, strategy: str,
                    inventory: dict[Endpoint, bool]) -> None:
    """A service may own monolith endpoints, except under new-only, where it owns only new ones."""
    if ep.is_prefix:
        return  # prefixes are not Flask routes, so the inventory cannot vouch for them
    gone = inventory.get(ep)
    if strategy == "new-only":
        if gone is False:
            problems.append(Problem(_kp(*at), f'"{ep}" is an endpoint of the monolith; under strategy '
                                    "new-only the monolith keeps its endpoints (use incremental to move it)"))
    elif gone is None:
        close = difflib.get_close_matches(str(ep), [str(e) for e in inventory], n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        problems.append(Problem(_kp(*at), f'"{ep}" is not an endpoint of the monolith (run strangler scan?){hint}'))
    elif gone:
        problems.append(Problem(_kp(*at), f'"{ep}" is marked gone from the monolith; remove it here'))


def _check_compare(problems: list[Problem], table: Mapping, inventory: dict[Endpoint, bool],
                   owned: dict[Endpoint, str]) -> None:
    """Check ``[compare]`` defaults and each ``[compare."METHOD /path"]`` table."""
    known = {ep for ep, gone in inventory.items() if not gone} | set(owned)
    _check_rule(problems, ("compare",), {k: v for k, v in table.items() if not isinstance(v, Mapping)})
    for spec, rule in table.items():
        if not isinstance(rule, Mapping):
            continue
        ep = _endpoint(problems, ("compare", spec), spec)
        if ep is not None and ep not in known:
            problems.append(Problem(_kp("compare", spec), f'"{ep}" is not an endpoint of the plan'))
        _check_rule(problems, ("compare", spec), rule)


def _check_tables(problems: list[Problem], tables: Mapping, backends: Mapping | None,
                  inventory: dict[Endpoint, bool], owned: dict[Endpoint, str]) -> None:
    """Check ``[tables.<name>]``: a table some backend owns, inserted by endpoints the plan knows."""
    known = {ep for ep, gone in inventory.items() if not gone} | set(owned)
    owners = {
        table
        for backend in (backends or {}).values() if isinstance(backend, Mapping)
        for table in (backend.get("tables") or []) if isinstance(table, str)
    }
    for name, raw in tables.items():
        path = ("tables", name)
        entry = _fields(problems, raw, path, _TABLE)
        if name not in owners:
            problems.append(Problem(_kp(*path), f'"{name}" is not a table of any backend; '
                                    "list it in a backend's tables"))
        for i, text in enumerate(entry.get("inserted_by", [])):
            ep = _endpoint(problems, path + ("inserted_by", i), text)
            if ep is not None and ep not in known:
                problems.append(Problem(_kp(*path, "inserted_by", i), f'"{ep}" is not an endpoint of the plan'))
            elif ep is not None and ep.is_prefix:
                problems.append(Problem(_kp(*path, "inserted_by", i),
                                        "name the method and path that inserts, not a prefix"))
        if "identity" in entry and not entry["identity"]:
            problems.append(Problem(_kp(*path, "identity"),
                                    'name the columns a row never changes, e.g. ["created_at", "user_id"]'))


def _check_rule(problems: list[Problem], path: tuple, raw: Mapping) -> None:
    rule = _fields(problems, raw, path, _RULE)
    for key in ("ignore", "sets"):
        for i, item in enumerate(rule.get(key, [])):
            if not _JSON_PATH.fullmatch(item):
                problems.append(Problem(_kp(*path, key, i),
                                        f'"{item}" is not a JSON path like users[*].last_seen_at'))
    for i, item in enumerate(rule.get("headers", [])):
        if not _HEADER.fullmatch(item):
            problems.append(Problem(_kp(*path, "headers", i), f'"{item}" is not a header name'))
