"""The comparator's view of the platform: shadowed routes, their candidates and live instances.

Read from etcd by a background thread every ``refresh`` seconds (the route
table, whose shadowed routes name their candidate, and the registry), so looking a
mirrored request up costs no I/O. A copy of a route the last read did not
show as shadowed (``strangler shadow`` just returned) reads etcd again at
once, at most every ``miss_every`` seconds, so no copy is filed unrouted
for want of a fresh read. The plan (compare rules, which backend is
the monolith) is read from its file and read again when the file changes.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from router import registry, table
from router.etcd import Etcd, EtcdError
from router.keys import Endpoint, Route
from strangler.plan import CompareRule, Plan, PlanError, load_plan
from strangler.shadow.matching import Matcher
from strangler.shadow.worker import COMPARATOR

log = logging.getLogger(__name__)


def plan_path(env: Mapping[str, str], run_dir: Path) -> Path | None:
    """Where the plan is: STRANGLER_PLAN, else the running stack's (``state.json``), else ./strangler.toml."""
    if env.get("STRANGLER_PLAN"):
        return Path(env["STRANGLER_PLAN"])
    try:
        named = json.loads((run_dir / "state.json").read_text()).get("plan")
    except (OSError, ValueError, AttributeError):
        named = None
    if named:
        return Path(named)
    here = Path("strangler.toml")
    return here if here.is_file() else None


class PlanRules:
    """The plan's compare rules and monolith name, re-read when the plan file changes.

    ``path`` may be a callable giving the path (or None), asked again until it gives one:
    the stack writes ``state.json`` only once every backend is up.
    """

    def __init__(self, path: Path | str | Callable[[], Path | None] | None) -> None:
        self._where = path if callable(path) else (lambda: Path(path) if path else None)
        self.path: Path | None = None
        self._plan: Plan | None = None
        self._mtime: float | None = None
        self._lock = threading.Lock()

    def plan(self) -> Plan | None:
        """The current plan, or None when there is none (or it does not load: the last good one)."""
        if self.path is None:
            self.path = self._where()
            if self.path is None:
                return None
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return self._plan
        with self._lock:
            if mtime != self._mtime:
                try:
                    self._plan, self._mtime = load_plan(self.path), mtime
                except PlanError as exc:
                    log.warning("keeping the last good plan: %s", exc)
                    self._mtime = mtime
            return self._plan

    @property
    def monolith(self) -> str:
        """The monolith's backend name (its registry name)."""
        plan = self.plan()
        return plan.monolith if plan else "monolith"

    def __call__(self, endpoint: Endpoint) -> CompareRule:
        """The compare rule for ``endpoint`` (the defaults when the plan does not know it)."""
        plan = self.plan()
        if plan is None:
            return CompareRule()
        try:
            return plan.compare_rule(endpoint)
        except PlanError:
            return plan.compare_default


class EtcdDirectory:
    """Implements ``worker.Directory`` from etcd, refreshed in the background (``start()``)."""

    def __init__(self, etcd: Etcd, rules: PlanRules, refresh: float = 1.0,
                 miss_every: float = 0.05) -> None:
        self.etcd = etcd
        self.rules = rules
        self.refresh_every = refresh
        self.miss_every = miss_every
        self._read_lock = threading.Lock()
        self._read_at = float("-inf")  # time.monotonic() when the last read began
        self._idle_miss_at = float("-inf")  # ... the last read for a miss that changed nothing
        self._routes: dict[Endpoint, Route] = {}
        self._matcher = Matcher([])
        self._urls: dict[str, Iterator[str]] = {}
        self.secret: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def monolith(self) -> str:
        """The monolith's registry name, from the plan."""
        return self.rules.monolith

    def refresh(self) -> None:
        """Read routes (with their candidates), instances and the mirror secret now
        (EtcdError when etcd does not answer)."""
        with self._read_lock:
            self._read_at = time.monotonic()
            self._read()

    def _read(self) -> None:
        routes, _ = table.load(self.etcd)
        self.secret = table.load_options(self.etcd).mirror_secret
        by_backend: dict[str, list[str]] = {}
        for instance in registry.instances(self.etcd):
            by_backend.setdefault(instance.backend, []).append(instance.url)
        if set(routes) != set(self._routes):
            self._matcher = Matcher(routes)
        self._routes = routes
        self._urls = {name: itertools.cycle(urls) for name, urls in by_backend.items()}

    def start(self) -> EtcdDirectory:
        """Refresh once (if etcd answers) and keep refreshing in a daemon thread."""
        try:
            self.refresh()
        except EtcdError as exc:
            log.warning("etcd not answering yet: %s", exc)
        self._thread = threading.Thread(target=self._loop, name="shadow-directory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_every):
            try:
                self.refresh()
            except EtcdError as exc:  # keep the last view; etcd may be back next time
                log.warning("could not refresh the shadow directory: %s", exc)

    def lookup(self, method: str, path: str) -> tuple[Endpoint, str | None] | None:
        """See worker.Directory.lookup: only endpoints whose route mirrors to the comparator.

        A miss reads etcd again first (see :meth:`reread`): Traefik mirrors only
        shadowed routes, so a copy the last read cannot place is most likely
        of a route shadowed since.
        """
        found = self._find(method, path)
        if found is None and self.reread():
            found = self._find(method, path)
        return found

    def reread(self) -> bool:
        """Read etcd again for a copy the view could not place; True when a fresh view came of it.

        Callers arriving during a read wait for it, and use it if it began
        after they asked. Copies that stay unplaceable (a route just taken off
        the mirror) cost at most one read per ``miss_every`` seconds.
        """
        asked = time.monotonic()
        with self._read_lock:
            if self._read_at >= asked:
                return True  # a read began after we asked: its view is fresh enough
            if self._idle_miss_at >= asked - self.miss_every:
                return False
            self._read_at = time.monotonic()
            before = self._shadowed()
            try:
                self._read()
            except EtcdError as exc:
                log.warning("could not read the shadow directory on a miss: %s", exc)
                return False
            if self._shadowed() == before:
                self._idle_miss_at = self._read_at
            return True

    def _shadowed(self) -> dict[Endpoint, str | None]:
        return {ep: r.candidate for ep, r in self._routes.items() if r.mirror == COMPARATOR}

    def _find(self, method: str, path: str) -> tuple[Endpoint, str | None] | None:
        endpoint = self._matcher.match(method, path)
        route = self._routes.get(endpoint) if endpoint else None
        if route is None or route.mirror != COMPARATOR:
            return None
        return endpoint, route.candidate

    def url(self, backend: str) -> str | None:
        """See worker.Directory.url (round robin over the registered instances)."""
        found = self._urls.get(backend)
        try:
            return next(found) if found else None
        except StopIteration:
            return None
