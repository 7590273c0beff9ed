"""The comparator's own Prometheus endpoint, ``GET /_shadow/metrics``: its counts and its queue.

Kept apart from the comparator's workings (:mod:`strangler.shadow.worker`):
it only reads the store (what is flushed to ``shadow.sqlite`` plus what
is still counted in memory) and the queue length. Open without the
mirror secret, like ``/healthz``, so Prometheus can scrape it; it tells
endpoint names and counts, nothing of a request. Under ``/_shadow/``
because every other path is a mirrored copy's. Names in docs/console.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from strangler.shadow.store import COUNTERS, live_report

PATH = "/_shadow/metrics"


class ComparatorCollector(Collector):
    """Per endpoint, each of the store's counters (flushed + pending), and the queue length."""

    def __init__(self, comparator: Callable[[], Any]) -> None:
        self.comparator = comparator

    def collect(self) -> Iterator[Metric]:
        """Every family, read now."""
        comparator = self.comparator()
        totals: dict[str, dict[str, float]] = {}
        targets: dict[str, str] = {}
        for entry in live_report(comparator.store, top=0, examples=0):
            totals[entry["endpoint"]] = {name: entry[name] or 0 for name in COUNTERS}
            targets[entry["endpoint"]] = entry.get("target") or ""
        for name in COUNTERS:
            family = CounterMetricFamily(f"strangler_comparator_{name}",
                                         f"Mirrored copies {name}, per shadowed endpoint",
                                         labels=["endpoint", "candidate"])
            for endpoint, counts in sorted(totals.items()):
                family.add_metric([endpoint, targets.get(endpoint, "")], counts.get(name, 0))
            yield family
        queue = GaugeMetricFamily("strangler_comparator_queue_length", "Copies waiting to be compared")
        queue.add_metric([], comparator.queue.qsize())
        yield queue


def init_app(app: Flask) -> None:
    """Add ``GET /_shadow/metrics`` to the comparator's app (its comparator in ``app.extensions``)."""
    registry = CollectorRegistry()
    registry.register(ComparatorCollector(lambda: app.extensions["comparator"]))

    def metrics() -> Response:
        """The comparator's counts as Prometheus text (anyone who reaches the comparator)."""
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule(PATH, "metrics", metrics, methods=["GET"])
