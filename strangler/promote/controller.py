"""The controller: carries every running promotion, one idempotent move at a time.

It runs as a process of the stack (``strangler controller``, started by
``strangler up``); the CLI only writes intent into etcd and watches. Every
move reads the promotion, does one thing, and writes the promotion back by
compare-and-swap. Route changes are idempotent (``router.table.apply``
writes nothing when the table already is as asked), so a controller killed
between a route change and the record's update redoes the change as a no-op
and goes on: it resumes a step being watched (the metrics baseline is in the
record; Traefik's counters outlive the controller), and rolls back when it
cannot know (Traefik restarted and its counters went down: the step is
watched again from a fresh baseline instead).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from router import table
from router.etcd import Compare, Etcd, EtcdError
from router.keys import Route, parse_endpoint
from router.traefik import TraefikAPI, TraefikError
from strangler import routing
from strangler.promote import analysis, metrics
from strangler.promote.records import (
    CONTROLLER_KEY,
    PROMOTED,
    ROLLED_BACK,
    RUNNING,
    Promotion,
    all_promotions,
    get,
    prune,
    save,
)

log = logging.getLogger(__name__)
COMPARATOR = "comparator"
LEASE_TTL = 3
# a shadow stage with too few comparisons goes on after this many intervals ("where possible")
SHADOW_WAITS = 3


class ControllerBusy(Exception):
    """Another controller holds the controller key (one line)."""


class Controller:
    """Drives the promotions stored in ``etcd``, reading metrics from ``traefik_urls``."""

    def __init__(self, etcd: Etcd, traefik_urls: Sequence[str], shadow_store: Path | str, *,
                 tick: float = 0.2, confirm_timeout: float = 10.0) -> None:
        self.etcd = etcd
        self.traefik_urls = list(traefik_urls)
        self.api = TraefikAPI(self.traefik_urls[0]) if self.traefik_urls else None
        self.shadow_store = Path(shadow_store)
        self.tick = tick
        self.confirm_timeout = confirm_timeout
        self.lease = None
        self.lost: str | None = None  # why this controller stopped for another one
        self.malformed: set[str] = set()  # records already reported as not promotions (said once each)
        self.failing: dict[int, str] = {}  # promotion id -> its last unexpected failure (logged once)

    # -- the process ----------------------------------------------------------------------

    def claim(self, wait: float = LEASE_TTL + 2.0) -> None:
        """Hold the controller key (bound to a lease); waits for a dead controller's lease to expire."""
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        deadline = time.monotonic() + wait
        while True:
            lease = self.etcd.lease(LEASE_TTL)
            if self.etcd.txn([Compare(CONTROLLER_KEY, 0)], [(CONTROLLER_KEY, me, lease)]):
                self.lease = lease
                return
            lease.revoke()
            if time.monotonic() > deadline:
                holder = self.etcd.get(CONTROLLER_KEY) or "{}"
                raise ControllerBusy(f"a controller already runs ({holder}); stop it first")
            time.sleep(0.2)

    def run(self, stop: threading.Event) -> None:
        """Claim the key, then move every running promotion until ``stop`` is set.

        The lease is kept alive from its own thread: one move may wait seconds
        for Traefik to confirm a change, longer than the lease's TTL.
        """
        self.claim()
        alive = threading.Thread(target=self._keep_alive, args=(stop,), daemon=True)
        alive.start()
        try:
            while not stop.is_set():
                self.pass_once()
                stop.wait(self.tick)
        finally:
            stop.set()
            alive.join(LEASE_TTL)
            try:
                self.lease.revoke()
            except EtcdError:
                pass
        if self.lost:
            raise ControllerBusy(self.lost)

    def _keep_alive(self, stop: threading.Event) -> None:
        while not stop.wait(LEASE_TTL / 3):
            try:
                if self.lease.refresh() <= 0:  # it expired (etcd unreachable for a while): claim again
                    self.claim()
            except EtcdError as exc:
                log.warning("controller lease: %s", exc)
            except ControllerBusy as exc:  # another controller took over meanwhile: it carries them now
                self.lost = f"lost the controller key while out of touch with etcd: {exc}"
                stop.set()

    def pass_once(self) -> None:
        """One move for every running promotion (a failure in one never stops the others)."""
        malformed: list[str] = []
        try:
            running = [p for p in all_promotions(self.etcd, malformed) if p.state == RUNNING]
        except EtcdError as exc:
            log.warning("cannot read promotions: %s", exc)
            return
        for line in set(malformed) - self.malformed:
            log.warning("%s", line)
        self.malformed = set(malformed)
        for promotion in running:
            try:
                self.move(promotion.id)
                self.failing.pop(promotion.id, None)
            except (EtcdError, TraefikError, metrics.MetricsError, routing.RoutingError,
                    table.ConcurrentChange) as exc:
                log.warning("promotion %s: %s (retrying)", promotion.id, exc)
            except Exception as exc:  # a bug in one promotion must not stop the others: logged, retried
                said = f"{type(exc).__name__}: {exc}"
                if self.failing.get(promotion.id) != said:  # once, not every tick
                    self.failing[promotion.id] = said
                    log.exception("promotion %s: unexpected failure (retrying every pass, "
                                  "logged again if it changes)", promotion.id)
        if running:
            return
        try:
            prune(self.etcd)
        except EtcdError:
            pass

    # -- one move ---------------------------------------------------------------------------

    def move(self, promotion_id: int) -> None:
        """Do the next thing promotion ``promotion_id`` needs, and record it (CAS)."""
        found = get(self.etcd, promotion_id)
        if found is None:
            return
        p, revision = found
        if p.state != RUNNING:
            return
        if p.abort and p.phase != "rollback":
            p.phase = "rollback"
            p.note(f"aborted by {p.abort}: rolling back")
        if p.phase == "rollback":
            self.roll_back(p)
        elif p.phase == "set":
            self.set_step(p)
        elif p.phase == "watch":
            if time.time() < (p.step_started or 0) + p.interval * (p.waits + 1):
                return
            self.judge(p)
            # act on the verdict at once: a breach is rolled back within this pass
            if p.state == RUNNING and p.phase == "rollback":
                self.roll_back(p)
            elif p.state == RUNNING and p.phase == "set":
                self.set_step(p)
        save(self.etcd, p, revision)  # None: someone (an --abort) wrote meanwhile; the next pass redoes

    def _write(self, p: Promotion, change: Callable[[routing.Routes], routing.Routes], what: str) -> None:
        try:
            routing.write(self.etcd, self.api, change, what=f"promotion {p.id}: {what}", who=p.who,
                          timeout=self.confirm_timeout)
        except routing.NotLive as exc:
            p.note(f"warning: {exc}")

    def _route(self, p: Promotion, spec: str) -> Route:
        data = p.before.get(spec)
        return Route.from_dict(data) if data else Route(parse_endpoint(spec))

    def set_step(self, p: Promotion) -> None:
        """Write the current step's routes, then start watching it from a fresh baseline."""
        weight = p.weight
        verdict = p.log[-1]["line"] if p.log and p.log[-1].get("verdict") == "pass" else ""
        why = f" ({verdict})" if verdict else ""
        if weight == 0:  # whole mode: shadow the service's reads first
            def shadow(routes: routing.Routes) -> routing.Routes:
                for spec in p.reads:
                    endpoint = parse_endpoint(spec)
                    routes[endpoint] = replace(self._route(p, spec), mirror=COMPARATOR, candidate=p.target)
                return routes

            self._write(p, shadow, f"shadow {routing.summary([parse_endpoint(s) for s in p.reads])} "
                                   f"to {p.target} before flipping {', '.join(p.endpoints)} whole")
            p.note(f"shadowing {len(p.reads)} read endpoint(s) of {p.target} for one interval")
        elif weight == 100:
            def whole(routes: routing.Routes) -> routing.Routes:
                for spec in p.endpoints:
                    before = self._route(p, spec)
                    routes[before.endpoint] = Route(before.endpoint, p.target, mirror=before.mirror,
                                                    candidate=before.candidate)
                return routes

            names = routing.summary([parse_endpoint(s) for s in p.endpoints])
            if p.mode == "whole":
                self._write(p, whole, f"flip {names} whole to {p.target} (inserts rows: no canary), "
                                      f"watching one interval{why}")
                p.note(f"flipped whole to {p.target}; watching one interval, rolling back on a breach")
            else:
                self._write(p, whole, f"promoted {names} to {p.target}{why}")
                p.state, p.ended, p.outcome = PROMOTED, time.time(), f"promoted to {p.target}"
                p.note(f"100%: flipped to {p.target} - promoted")
                return
        else:
            def canary(routes: routing.Routes) -> routing.Routes:
                for spec in p.endpoints:
                    before = self._route(p, spec)
                    routes[before.endpoint] = routing.flipped(
                        Route(before.endpoint, before.backend, mirror=before.mirror,
                              candidate=before.candidate), p.target, weight)
                return routes

            self._write(p, canary, f"{weight}% of {routing.summary([parse_endpoint(s) for s in p.endpoints])} "
                                   f"to {p.target}{why}")
            p.note(f"{weight}%: watching for {p.interval:g}s")
        self.start_watch(p)

    def start_watch(self, p: Promotion) -> None:
        """Record the counters now: the step is judged on what happens from here."""
        compared, differing = metrics.diff_counts(self.shadow_store, self._diffed(p))
        snapshot = metrics.scrape(self.traefik_urls)
        services = self._services(p)
        p.baseline = {"metrics": {s: snapshot[s].to_dict() for s in services if s in snapshot},
                      "compared": compared, "differing": differing}
        p.step_started, p.phase, p.waits = time.time(), "watch", 0

    def _services(self, p: Promotion) -> tuple[str, str]:
        options = table.load_options(self.etcd)
        base = self._route(p, p.endpoints[0]).backend
        return options.service(p.target), options.service(base)

    def _diffed(self, p: Promotion) -> list[str]:
        """The endpoints whose comparisons count: shadowed to the target before, or by this promotion."""
        shadowed = [s for s in p.endpoints if self._route(p, s).mirror and self._route(p, s).candidate == p.target]
        return shadowed + (p.reads if p.weight == 0 else [])

    def judge(self, p: Promotion) -> None:
        """The interval is over: read the figures and go on, wait, or roll back."""
        candidate, base = self._services(p)
        after = metrics.scrape(self.traefik_urls)
        before = {s: metrics.Counters.from_dict(c) for s, c in (p.baseline or {}).get("metrics", {}).items()}
        window, base_window = metrics.window(before, after, candidate), metrics.window(before, after, base)
        if window is None or base_window is None:
            p.note("Traefik's counters went down (a restart): watching this step again")
            self.start_watch(p)
            return
        compared, differing = metrics.diff_counts(self.shadow_store, self._diffed(p))
        shadowed = bool(self._diffed(p))
        d_compared = max(compared - p.baseline.get("compared", 0), 0)
        d_differing = max(differing - p.baseline.get("differing", 0), 0)
        if p.weight == 0:  # the shadow stage is judged on comparisons alone
            fig = analysis.Figures(d_compared, 0, None, 0, None, d_compared, d_differing, True)
        else:
            fig = analysis.figures(window, base_window, d_compared, d_differing, shadowed)
        limits = analysis.Thresholds.from_dict(p.thresholds)
        outcome, why = analysis.verdict(fig, limits, whole=p.mode == "whole")
        label = "shadow" if p.weight == 0 else f"{p.weight}%"
        line = f"{label}: {outcome} - {fig.line()}" + (f" ({why})" if outcome != "pass" else "")
        if outcome == "wait" and p.weight == 0 and p.waits + 1 >= SHADOW_WAITS:
            outcome, line = "pass", f"{label}: too few comparisons ({fig.line()}); going on without them"
        p.note(line, verdict=outcome, figures=fig.to_dict())
        if outcome == "wait":
            p.waits += 1
        elif outcome == "fail":
            p.phase = "rollback"
        elif p.weight == 100:  # whole mode, watched: done
            self.finish(p, line)
        else:
            p.step, p.phase = p.step + 1, "set"

    def finish(self, p: Promotion, line: str) -> None:
        """Whole mode passed its watch: end the reads' shadow (if it added one); promoted."""
        if p.reads:
            def unshadow(routes: routing.Routes) -> routing.Routes:
                for spec in p.reads:
                    before = self._route(p, spec)
                    routes[before.endpoint] = before
                return routes

            self._write(p, unshadow, f"promoted {', '.join(p.endpoints)} to {p.target} ({line}); "
                                     "shadow of the reads ended")
        p.state, p.ended, p.outcome = PROMOTED, time.time(), f"promoted to {p.target}"
        p.note(f"promoted to {p.target}")

    def roll_back(self, p: Promotion) -> None:
        """Put every touched endpoint back where it was before the promotion, in ONE change."""
        reason = p.abort and f"aborted by {p.abort}" or next(
            (e["line"] for e in reversed(p.log) if e.get("verdict") == "fail"), "rolled back")

        def restore(routes: routing.Routes) -> routing.Routes:
            for spec in p.endpoints + p.reads:
                endpoint = parse_endpoint(spec)
                if p.before.get(spec) is None:
                    routes.pop(endpoint, None)
                else:
                    routes[endpoint] = self._route(p, spec)
            return routes

        self._write(p, restore, f"rolled back {routing.summary([parse_endpoint(s) for s in p.endpoints])} "
                                f"({reason})")
        p.state, p.ended, p.outcome = ROLLED_BACK, time.time(), f"rolled back: {reason}"
        p.note(f"rolled back to the routes from before the promotion ({reason})")

