"""The supervisor's own Prometheus ``/metrics``: restarts and states of what it watches, and promotions.

Served on a free loopback port from the supervisor's process (a daemon
thread of prometheus-client's server); its URL is ``state.json``'s
``supervisor_metrics``, which is where the console finds it to include it
in its own ``/metrics``. Read at scrape time from the supervisor's
``watched`` processes and, for promotions, from etcd (the controller runs
under the supervisor, as a process like the rest; its promotions live in
etcd). Names in docs/console.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.etcd import EtcdError
from strangler.promote import records

HOST = "127.0.0.1"
STATE_KEY = "supervisor_metrics"  # state.json: the URL of the supervisor's /metrics


class SupervisorCollector(Collector):
    """Per watched process its restarts and state; promotions per state, from etcd."""

    def __init__(self, supervisor: Any, states: tuple[str, ...]) -> None:
        self.supervisor = supervisor
        self.states = states  # every state, each given a series (0 when no process is in it)

    def collect(self) -> Iterator[Metric]:
        """Every family, read now (promotions left out while etcd does not answer)."""
        with self.supervisor.lock:
            watched = list(self.supervisor.watched.values())
        restarts = CounterMetricFamily("strangler_supervisor_restarts",
                                       "Restarts of each process the supervisor watches",
                                       labels=["process", "backend"])
        states = GaugeMetricFamily("strangler_supervisor_processes",
                                   "Processes the supervisor watches, by state", labels=["state"])
        counted = Counter(w.state for w in watched)
        for w in sorted(watched, key=lambda w: w.proc.name):
            restarts.add_metric([w.proc.name, w.backend or ""], w.restarts)
        for state in self.states:
            states.add_metric([state], counted.get(state, 0))
        yield restarts
        yield states
        try:
            found = records.all_promotions(self.supervisor.stack.client)
        except EtcdError:
            return
        promotions = GaugeMetricFamily("strangler_promotions",
                                       "Promotions kept in etcd, by state (running, promoted, rolled back)",
                                       labels=["state"])
        by_state = Counter(p.state for p in found)
        for state in (records.RUNNING, *records.ENDED):
            promotions.add_metric([state], by_state.get(state, 0))
        yield promotions


def serve(supervisor: Any, states: tuple[str, ...]) -> str:
    """Serve the supervisor's ``/metrics`` on a free loopback port; its URL."""
    registry = CollectorRegistry()
    registry.register(SupervisorCollector(supervisor, states))
    server, _ = start_http_server(0, addr=HOST, registry=registry)
    return f"http://{HOST}:{server.server_port}/metrics"
