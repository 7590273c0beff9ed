"""The console's ``/metrics``: the whole migration as Prometheus series, one scrape target.

Read from the console's snapshot at scrape time (so no series is older
than the snapshot's cache): routing, instances, the comparator's counts,
the data links and write-through. The names are listed in
docs/console.md; every one starts with ``strangler_``.

It also relays the toolkit's other processes' own ``/metrics`` (the sync
followers', the supervisor's: their URLs are in ``state.json``), scraped at
the same moment (:class:`RelayCollector`), so Prometheus needs this one
target; ``strangler_console_relay_up`` says which answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import requests
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

SHADOW_COUNTERS = ("seen", "compared", "differing", "dropped", "skipped", "errors")
WRITE_THROUGH = ("inserted", "updated", "failed", "conflicts")


class MigrationCollector(Collector):
    """Turns a console snapshot (``Snapshots.get``) into metric families."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        """Every family, from one snapshot."""
        snap = self.snapshot()
        yield from _routing(snap)
        yield from _instances(snap)
        yield from _shadow(snap)
        yield from _data(snap)


def _routing(snap: dict[str, Any]) -> Iterator[Metric]:
    endpoints = GaugeMetricFamily("strangler_endpoints", "Endpoints in the route table, by state and answering backend",
                                  labels=["state", "backend"])
    counts: dict[tuple[str, str], int] = {}
    for row in snap.get("routes", []):
        key = (row["state"], row["backend"] or "")
        counts[key] = counts.get(key, 0) + 1
    for (state, backend), n in sorted(counts.items()):
        endpoints.add_metric([state, backend], n)
    yield endpoints
    moved = GaugeMetricFamily("strangler_service_endpoints",
                              "Per owning service: its endpoints moved, on a canary, and in all",
                              labels=["service", "stage"])
    for entry in snap.get("progress", []):
        for stage in ("moved", "canary", "total"):
            moved.add_metric([entry["service"], stage], entry[stage])
    yield moved
    history = snap.get("history", [])
    changes = CounterMetricFamily("strangler_routing_changes", "Routing changes recorded in the history")
    changes.add_metric([], max((c["id"] for c in history), default=0))
    yield changes
    rps = GaugeMetricFamily("strangler_endpoint_requests_per_second",
                            "Requests/s per endpoint over the last minute (from Traefik's metrics)",
                            labels=["endpoint"])
    for row in snap.get("routes", []):
        if row.get("traffic"):
            rps.add_metric([row["endpoint"]], row["traffic"]["rps"])
    yield rps
    answering = GaugeMetricFamily("strangler_backend_requests_per_second",
                                  "Requests/s each backend answered over the last minute (from Traefik's metrics)",
                                  labels=["backend"])
    for backend, value in sorted((snap.get("answering") or {}).items()):
        answering.add_metric([backend], value)
    yield answering


def _instances(snap: dict[str, Any]) -> Iterator[Metric]:
    instances = GaugeMetricFamily("strangler_instances", "Instances per backend, healthy or not",
                                  labels=["backend", "healthy"])
    restarts = CounterMetricFamily("strangler_instance_restarts", "Restarts per instance the stack started",
                                   labels=["backend", "instance"])
    for row in snap.get("instances", []):
        healthy = sum(1 for i in row["instances"] if i["healthy"])
        instances.add_metric([row["backend"], "true"], healthy)
        instances.add_metric([row["backend"], "false"], len(row["instances"]) - healthy)
        for inst in row["instances"]:
            if inst.get("name"):
                restarts.add_metric([row["backend"], inst["name"]], inst.get("restarts") or 0)
    yield instances
    yield restarts


def _shadow(snap: dict[str, Any]) -> Iterator[Metric]:
    families = {name: CounterMetricFamily(f"strangler_shadow_{name}",
                                          f"Mirrored requests {name}, per shadowed endpoint (the comparator)",
                                          labels=["endpoint", "candidate"])
                for name in SHADOW_COUNTERS}
    for entry in snap.get("diffs", []):
        for name, family in families.items():
            family.add_metric([entry["endpoint"], entry.get("target") or ""], entry.get(name) or 0)
    yield from families.values()


def _data(snap: dict[str, Any]) -> Iterator[Metric]:
    lag = GaugeMetricFamily("strangler_data_sync_lag_seconds", "How late the last sync pass's changes landed",
                            labels=["service", "direction"])
    age = GaugeMetricFamily("strangler_data_last_pass_age_seconds", "Seconds since the last sync pass started",
                            labels=["service", "direction"])
    collisions = GaugeMetricFamily("strangler_data_collisions", "Ids holding a row moved aside (see migrate verify)",
                                   labels=["service", "direction"])
    for row in snap.get("data", []):
        labels = [row["service"], row["direction"]]
        if row.get("lag") is not None:
            lag.add_metric(labels, row["lag"])
        if row.get("last_pass_age") is not None:
            age.add_metric(labels, row["last_pass_age"])
        collisions.add_metric(labels, row.get("collisions") or 0)
    yield lag
    yield age
    yield collisions
    rows = CounterMetricFamily("strangler_writethrough_rows", "Rows written through to peer databases, by outcome",
                               labels=["backend", "instance", "outcome"])
    for row in snap.get("write_through", []):
        for outcome in WRITE_THROUGH:
            rows.add_metric([row["backend"], row["instance"], outcome], row.get(outcome) or 0)
    yield rows


def relayed_urls(state: dict[str, Any]) -> dict[str, str]:
    """PURE: target name -> ``/metrics`` URL of the processes ``state.json`` records as serving one."""
    urls = {f"sync-{service}": entry["metrics"] for service, entry in sorted((state.get("data") or {}).items())
            if isinstance(entry, dict) and entry.get("metrics")}
    if state.get("supervisor_metrics"):
        urls["supervisor"] = state["supervisor_metrics"]
    return urls


class RelayCollector(Collector):
    """The families of every relayed ``/metrics``, merged by name (one HELP/TYPE per family)."""

    def __init__(self, urls: Callable[[], dict[str, str]], timeout: float = 1.0) -> None:
        self.urls = urls
        self.timeout = timeout
        self.http = requests.Session()
        self.http.trust_env = False  # loopback only: no proxy from the environment

    def collect(self) -> Iterator[Metric]:
        """Scrape each target now; one that does not answer counts as down, its series left out."""
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily("strangler_console_relay_up",
                               "1 when a relayed process's /metrics answered this scrape", labels=["target"])
        for target, url in self.urls().items():
            try:
                answer = self.http.get(url, timeout=self.timeout)
                answer.raise_for_status()
                families = list(text_string_to_metric_families(answer.text))
            except (requests.RequestException, ValueError):
                up.add_metric([target], 0)
                continue
            up.add_metric([target], 1)
            for family in families:
                if not family.name.startswith("strangler_"):
                    continue  # the client's own process_/python_ series: not the migration's
                into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                into.samples.extend(x for x in family.samples if not x.name.endswith("_created"))
        yield from merged.values()
        yield up


def registry_for(snapshot: Callable[[], dict[str, Any]],
                 relayed: Callable[[], dict[str, str]] | None = None) -> tuple[CollectorRegistry, Counter]:
    """A registry of its own (not the process-wide default), and the console's request counter."""
    registry = CollectorRegistry()
    registry.register(MigrationCollector(snapshot))
    if relayed is not None:
        registry.register(RelayCollector(relayed))
    requests = Counter("strangler_console_requests", "Requests the console answered, by view and status",
                       ["view", "status"], registry=registry)
    return registry, requests
