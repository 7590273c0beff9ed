"""``strangler scan``'s core: the monolith's endpoints, and the plan's inventory kept up to date.

``scan_app`` reads a Flask app's url_map (pure). ``update_inventory`` merges
the result into the plan's ``[[endpoints]]`` inside a tomlkit document, so
comments, ordering and hand edits survive; vanished endpoints are marked
``gone = true``, never deleted. ``create_scan_app`` builds the monolith
with a throw-away data dir and database, so scanning never touches real data.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import tomlkit
from tomlkit.items import Table

if TYPE_CHECKING:  # Flask costs ~0.1 s to import; only scanning needs it
    from flask import Flask

from strangler.plan.schema import METHODS, Endpoint, normalise_rule, parse_endpoint_spec

# Flask answers HEAD and OPTIONS for every rule itself; they follow their route.
SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})
INVENTORY_COMMENT = "The monolith's endpoints, written by `strangler scan` (hand edits are kept)."


class ScanError(Exception):
    """The monolith's app cannot be found or is not a Flask app: one line saying what to fix."""


class ScannedEndpoint(NamedTuple):
    """One endpoint found in the monolith: the endpoint, its Flask name and the raw rule."""

    endpoint: Endpoint
    name: str
    rule: str


@dataclass
class InventoryChange:
    """What ``update_inventory`` did; empty lists mean the inventory was already current."""

    added: list[Endpoint] = field(default_factory=list)
    gone: list[Endpoint] = field(default_factory=list)
    back: list[Endpoint] = field(default_factory=list)
    renamed: list[tuple[Endpoint, str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True if the document was modified."""
        return bool(self.added or self.gone or self.back or self.renamed)

    def lines(self) -> list[str]:
        """One human line per change, for the CLI."""
        return (
            [f"added   {ep}" for ep in self.added]
            + [f"gone    {ep} (marked gone = true)" for ep in self.gone]
            + [f"back    {ep} (gone removed)" for ep in self.back]
            + [f"renamed {ep}: {old or '(no name)'} -> {new}" for ep, old, new in self.renamed]
        )


def _is_static(endpoint_name: str) -> bool:
    # static files are served by prefix (declare "PREFIX /static/"), not as endpoints
    return endpoint_name == "static" or endpoint_name.endswith(".static")


def scan_app(app: Flask) -> list[ScannedEndpoint]:
    """Every endpoint of ``app``'s url_map, one per method, sorted by path then method.

    Skips static-file rules and HEAD/OPTIONS; converters are normalised
    (``<int:id>`` -> ``<id>``). When two rules normalise to the same endpoint
    the first one wins (Flask would dispatch to it first, too).
    """
    found: dict[Endpoint, ScannedEndpoint] = {}
    for rule in app.url_map.iter_rules():
        if _is_static(rule.endpoint):
            continue
        for method in sorted((rule.methods or set()) - SKIPPED_METHODS):
            if method not in METHODS:
                continue  # a WebDAV verb or similar: nothing the router can express
            ep = Endpoint(method, normalise_rule(rule.rule))
            found.setdefault(ep, ScannedEndpoint(ep, rule.endpoint, rule.rule))
    return sorted(found.values(), key=lambda s: (s.endpoint.path, METHODS.index(s.endpoint.method)))


def update_inventory(doc: tomlkit.TOMLDocument, scanned: list[ScannedEndpoint]) -> InventoryChange:
    """Merge ``scanned`` into ``doc``'s ``[[endpoints]]`` in place; return what changed.

    New endpoints are appended; entries no longer in the monolith get
    ``gone = true``; a gone one that is back loses its ``gone``; a changed
    Flask name is updated. Entries whose endpoint does not parse are left
    alone (``strangler plan check`` reports them). Running it twice changes
    nothing the second time.
    """
    change = InventoryChange()
    entries = doc.get("endpoints")
    by_endpoint = {s.endpoint: s for s in scanned}
    listed: set[Endpoint] = set()
    for entry in entries or []:
        try:
            ep = parse_endpoint_spec(entry.get("endpoint"))
        except (ValueError, AttributeError):
            continue
        listed.add(ep)
        found = by_endpoint.get(ep)
        if found is None:
            if not entry.get("gone", False):
                entry["gone"] = True
                change.gone.append(ep)
            continue
        if entry.get("gone", False):
            del entry["gone"]
            change.back.append(ep)
        if entry.get("name") != found.name:
            change.renamed.append((ep, entry.get("name"), found.name))
            entry["name"] = found.name
    new = [s for s in scanned if s.endpoint not in listed]
    if new:
        _append(doc, entries, new)
        change.added += [s.endpoint for s in new]
    return change


def _append(doc: tomlkit.TOMLDocument, entries: Any, new: list[ScannedEndpoint]) -> None:
    """Append entries for ``new``, one blank line between tables as a person would write them."""
    tables = [_entry(s) for s in new]
    if entries is None:
        # a fresh array of tables: tomlkit separates its tables itself
        doc.add(tomlkit.nl())
        doc.add(tomlkit.comment(INVENTORY_COMMENT))
        doc.append("endpoints", tomlkit.aot())
        for table in tables:
            doc["endpoints"].append(table)
        return
    if len(entries) and isinstance(entries[-1], Table) and not entries[-1].as_string().endswith("\n\n"):
        entries[-1].add(tomlkit.nl())
    more_follows = list(doc.keys())[-1] != "endpoints"
    for i, table in enumerate(tables):
        if i < len(tables) - 1 or more_follows:
            table.add(tomlkit.nl())
        entries.append(table)


def _entry(s: ScannedEndpoint) -> Table:
    table = tomlkit.table()
    table["endpoint"] = str(s.endpoint)
    table["name"] = s.name
    return table


@contextlib.contextmanager
def _temporary_environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def load_factory(spec: str, search_path: Path | None = None) -> Any:
    """Import ``"module:factory"``; ScanError says what to fix (one line)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ScanError(f'app "{spec}" must be "module:factory", e.g. "monolith:create_app"')
    added = search_path is not None and str(search_path) not in sys.path
    if added:
        sys.path.insert(0, str(search_path))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScanError(f'app "{spec}": cannot import {module_name} ({exc})') from None
    finally:
        if added:
            sys.path.remove(str(search_path))
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ScanError(f'app "{spec}": {module_name} has no callable {attr}')
    return factory


def create_scan_app(spec: str, workdir: Path, search_path: Path | None = None) -> Flask:
    """Build the app ``spec`` names on a throw-away database in ``workdir`` (which the caller removes).

    The settings go both in the environment (for factories that read it) and
    as the factory's config mapping, if it takes one: ``DATABASE_URL`` and
    ``SQLALCHEMY_DATABASE_URI`` for SQLAlchemy apps, ``DATABASE`` (a file) for
    apps on plain ``sqlite3`` as Flask's tutorial writes them. ``spec`` may
    also name an app object rather than a factory (``"module:app"``).
    """
    from flask import Flask  # here, not at the top: every command imports this module (plan_option)

    factory = load_factory(spec, search_path)
    if isinstance(factory, Flask):  # an app built at import time: nothing to configure
        return factory
    url = f"sqlite:///{workdir / 'scan.sqlite'}"
    settings = {
        "STRANGLER_ENV": "testing",
        "STRANGLER_DATA_DIR": str(workdir),
        "DATABASE_URL": url,
        "START_OFFLINE_TASK": "0",
    }
    with _temporary_environ(settings):
        takes_config = bool(inspect.signature(factory).parameters)
        app = factory({**settings, "TESTING": True, "SQLALCHEMY_DATABASE_URI": url,
                       "DATABASE": str(workdir / "scan.sqlite")}) if takes_config else factory()
    if not isinstance(app, Flask):
        raise ScanError(f'app "{spec}" returned {type(app).__name__}, not a Flask app')
    return app
