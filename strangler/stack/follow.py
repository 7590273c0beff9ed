"""One linked service's sync follower, as ``strangler up`` runs it: both directions, until SIGTERM.

``python -m strangler.stack.follow`` reads its job from ``STRANGLER_FOLLOW``
(JSON written by :func:`strangler.stack.data.follower_spec`): the service's
tables, the interval, and two directions (monolith -> service, service ->
monolith), each with its database URLs and watermark file. Each direction
runs in its own thread: a :class:`strangler.migrate.sync.Syncer` pass every
``interval`` seconds. A pass saves its figures (``lag``, when it ran) in
the watermark file, which is where ``strangler status`` reads them.

A failing pass (a peer database down, a conflict) never ends the
follower: the error goes to the log and into the state file's last pass
(``error``), and the next pass tries again with fresh connections.

**Its own metrics.** With ``STRANGLER_METRICS_BIND`` (``127.0.0.1:PORT``,
set by ``strangler up``, the URL recorded in ``state.json``'s ``data``) it
serves Prometheus text at ``/metrics``: rows written per outcome, passes per
result, lag and the last good pass, per direction (:class:`FollowerMetrics`;
names in docs/console.md).

**Settled changes only.** The apps write through every change at once;
the follower is the safety net, so it carries only changes at least
``SETTLE`` seconds old. ``updated_at`` is in whole seconds, and a follower
carrying a fresh row could otherwise overwrite a newer write-through made
in the *same* second (equal ``updated_at`` passes the newer-wins guard):
e.g. put a user back online on the monolith right after it went offline.
A change made after the follower read a settled row has a strictly greater
``updated_at``, so the guard keeps it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from sqlalchemy.exc import SQLAlchemyError

from datalink.tables import MigrateError, first_line
from strangler.migrate.sync import Syncer, SyncResult, SyncState
from strangler.stack.data import FOLLOW_ENV, METRICS_BIND_ENV

SETTLE = 2  # seconds: changes younger than this are write-through's to carry


def log(line: str) -> None:
    """One timestamped line on stdout (the follower's log file)."""
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


class FollowerMetrics:
    """The follower's figures as Prometheus metrics, per direction (labels ``service``, ``direction``)."""

    # a row a pass read and wrote, or left: inserted, updated, kept_newer (the target's copy is newer:
    # a conflict newer-wins settled), collision (different rows under one id: moved aside)
    OUTCOMES = ("inserted", "updated", "kept_newer", "collision")

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        labels = ["service", "direction"]
        self.rows = Counter("strangler_sync_rows", "Rows a sync pass handled, by outcome", [*labels, "outcome"],
                            registry=self.registry)
        self.passes = Counter("strangler_sync_passes", "Sync passes, by result (ok / failed)",
                              [*labels, "result"], registry=self.registry)
        self.lag = Gauge("strangler_sync_lag_seconds", "How late the last good pass's changes landed",
                         labels, registry=self.registry)
        self.last_pass = Gauge("strangler_sync_last_pass_timestamp_seconds",
                               "When the last good pass ended (Unix time)", labels, registry=self.registry)

    def direction(self, name: str) -> None:
        """Make the direction's series exist at 0 before its first pass (a scrape sees every one)."""
        for outcome in self.OUTCOMES:
            self.rows.labels(self.service, name, outcome)
        for result in ("ok", "failed"):
            self.passes.labels(self.service, name, result)

    def passed(self, name: str, result: SyncResult) -> None:
        """Count one good pass."""
        for table in result.tables:
            for outcome, n in zip(self.OUTCOMES, (table.inserted, table.updated, table.kept_newer,
                                                  table.collisions), strict=True):
                if n:
                    self.rows.labels(self.service, name, outcome).inc(n)
        self.passes.labels(self.service, name, "ok").inc()
        self.lag.labels(self.service, name).set(result.lag)
        self.last_pass.labels(self.service, name).set(result.finished_at)

    def failed(self, name: str) -> None:
        """Count one failed pass."""
        self.passes.labels(self.service, name, "failed").inc()

    def serve(self, bind: str) -> str | None:
        """Serve ``/metrics`` on ``bind`` (``HOST:PORT``) in a daemon thread; None, or why it could not."""
        host, _, port = bind.rpartition(":")
        try:
            start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        except (OSError, ValueError) as exc:
            return f"{METRICS_BIND_ENV}={bind!r}: {exc}"
        return None


def follow(direction: dict[str, Any], tables: list[str], interval: float, stop: threading.Event,
           identities: dict[str, list[str]] | None = None, metrics: FollowerMetrics | None = None) -> None:
    """Sync one direction pass after pass until *stop* is set; errors are logged and retried."""
    state = SyncState.load(direction["state"])
    syncer: Syncer | None = None
    failing = False
    while not stop.is_set():
        try:
            if syncer is None:
                syncer = Syncer(direction["source"], direction["target"], tables, state,
                                tuple(direction["labels"]), identities=identities, settle=SETTLE)
            result = syncer.once()
            if metrics is not None:
                metrics.passed(direction["name"], result)
            clashes = sum(t.collisions for t in result.tables)
            if clashes:
                log(f"{direction['name']}: COLLISION: {clashes} row(s) are different rows under an id "
                    f"the target already uses; moved aside into strangler_collisions (see "
                    f"strangler migrate verify)")
            if result.applied or failing:
                parts = ", ".join(f"{t.table} +{t.inserted} ~{t.updated}" for t in result.tables)
                log(f"{direction['name']}: synced {result.applied} row(s) ({parts}); lag {result.lag:.1f} s")
            failing = False
        except (MigrateError, SQLAlchemyError) as exc:
            message = str(exc) if isinstance(exc, MigrateError) else first_line(exc)
            log(f"{direction['name']}: pass failed: {message}; retrying")
            if metrics is not None:
                metrics.failed(direction["name"])
            state.last_pass = {**state.last_pass, "error": message, "error_at": time.time()}
            state.save()
            failing = True
            if syncer is not None:  # reconnect next time: the database may have gone away
                syncer.close()
                syncer = None
        stop.wait(interval)
    if syncer is not None:
        syncer.close()


def main() -> int:
    """Run the followers ``STRANGLER_FOLLOW`` describes until SIGTERM or SIGINT; exit 0."""
    try:
        spec = json.loads(os.environ[FOLLOW_ENV])
    except (KeyError, ValueError):
        print(f"{FOLLOW_ENV} must hold the follower's JSON job (strangler up sets it)", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    metrics = FollowerMetrics(spec["service"])
    for direction in spec["directions"]:
        metrics.direction(direction["name"])
    bind = os.environ.get(METRICS_BIND_ENV)
    if bind:  # a follower without its metrics still follows: say so, and go on
        why = metrics.serve(bind)
        log(f"metrics not served: {why}" if why else f"metrics on http://{bind}/metrics")
    threads = [
        threading.Thread(target=follow, args=(d, spec["tables"], spec["interval"], stop,
                                              spec.get("identities"), metrics), name=d["name"])
        for d in spec["directions"]
    ]
    log(f"following {spec['service']} ({', '.join(spec['tables'])}) every {spec['interval']} s: "
        + "; ".join(d["name"] for d in spec["directions"]))
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(0.2)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
