"""Per-endpoint traffic from Traefik's Prometheus metrics: requests/s, error %, p50/p99, a sparkline.

Traefik counts every request per router (``traefik_router_requests_total``
and the ``traefik_router_request_duration_seconds`` histogram, labelled
``router="<endpoint-id>@etcd"`` once ``addRoutersLabels`` is on, see
router.traefik.static_config). Counters only grow, so figures over "the
last minute" are differences between two scrapes: :class:`Sampler` keeps
the scrapes of the last ``window`` seconds, and the pure functions below
turn two of them into rates and quantiles.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import requests
from prometheus_client.parser import text_string_to_metric_families

from strangler.promote.metrics import histogram_quantile

REQUESTS = "traefik_router_requests"  # the parser drops the counter's _total
DURATION = "traefik_router_request_duration_seconds"
SERVICE_REQUESTS = "traefik_service_requests"  # per Traefik service: which backend answered
_WANTED = re.compile(rf"(# (HELP|TYPE) )?({REQUESTS}_total|{DURATION}(_bucket)?|{SERVICE_REQUESTS}_total)[ {{]")


@dataclass
class RouterCounts:
    """One router's counters at one scrape: requests, 5xx answers, duration histogram buckets."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count


Scrape = dict[str, RouterCounts]  # router name without @provider -> its counts
Services = dict[str, float]  # Traefik service name without @provider -> requests it answered


def parse_metrics(text: str) -> Scrape:
    """PURE: Traefik's ``/metrics`` text as counts per router (labels other than router summed)."""
    return parse_all(text)[0]


def parse_all(text: str) -> tuple[Scrape, Services]:
    """PURE: counts per router, and requests per Traefik service (labels other than these summed)."""
    found: Scrape = {}
    services: Services = {}
    # only the families read here go through the (slow, pure Python) parser
    wanted = "\n".join(line for line in text.splitlines() if _WANTED.match(line))
    for family in text_string_to_metric_families(wanted + "\n"):
        if family.name == SERVICE_REQUESTS:
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("service"):
                    name = sample.labels["service"].split("@")[0]
                    services[name] = services.get(name, 0.0) + sample.value
            continue
        if family.name not in (REQUESTS, DURATION):
            continue
        for sample in family.samples:
            router = sample.labels.get("router", "").split("@")[0]
            if not router:
                continue
            counts = found.setdefault(router, RouterCounts())
            if family.name == REQUESTS and sample.name.endswith("_total"):
                counts.requests += sample.value
                if sample.labels.get("code", "").startswith("5"):
                    counts.errors += sample.value
            elif family.name == DURATION and sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                counts.buckets[bound] = counts.buckets.get(bound, 0.0) + sample.value
    return found, services


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """PURE: the ``q`` quantile (0..1) of a cumulative histogram ``{upper bound: count}``, interpolated
    in its bucket as PromQL does (promotion's verdicts use the same function); None without observations."""
    return histogram_quantile(q, buckets.items())


def between(old: RouterCounts | None, new: RouterCounts, seconds: float) -> dict[str, float | None]:
    """PURE: requests/s, error % and p50/p99 (seconds) of what happened between two scrapes.

    A counter that went down (Traefik restarted) counts from zero.
    """
    old = old or RouterCounts()
    if new.requests < old.requests:
        old = RouterCounts()
    count = new.requests - old.requests
    delta = {b: new.buckets[b] - old.buckets.get(b, 0.0) for b in new.buckets}
    return {
        "rps": round(count / seconds, 3) if seconds > 0 else 0.0,
        "error_pct": round(100 * (new.errors - old.errors) / count, 2) if count else None,
        "p50": quantile(0.5, delta),
        "p99": quantile(0.99, delta),
    }


class Sampler:
    """Scrapes ``<traefik_api>/metrics`` at most every ``every`` seconds, keeps ``window`` seconds."""

    def __init__(self, url: str, *, window: float = 60.0, every: float = 1.0, timeout: float = 1.0,
                 session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/") + "/metrics"
        self.session = session or requests.Session()
        self.window = window
        self.every = every
        self.timeout = timeout
        self.scrapes: deque[tuple[float, Scrape]] = deque()
        self.services: deque[tuple[float, Services]] = deque()
        self.error: str | None = None
        self._lock = threading.Lock()

    def scrape(self, now: float | None = None) -> None:
        """Take a scrape unless the last one is younger than ``every``; a failure is kept in ``error``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.scrapes and now - self.scrapes[-1][0] < self.every:
                return
            try:
                response = self.session.get(self.url, timeout=self.timeout)
                response.raise_for_status()
                found, services = parse_all(response.text)
            except (requests.RequestException, ValueError) as exc:
                self.error = f"Traefik's metrics at {self.url} unreadable: {exc.__class__.__name__}"
                return
            self.error = None
            self.scrapes.append((now, found))
            self.services.append((now, services))
            while self.scrapes and now - self.scrapes[0][0] > self.window:
                self.scrapes.popleft()
                self.services.popleft()

    def answered(self) -> Services:
        """Requests/s each Traefik service answered over the window (a restarted counter from zero)."""
        with self._lock:
            if len(self.services) < 2:
                return {}
            (first_t, first), (last_t, last) = self.services[0], self.services[-1]
        seconds = last_t - first_t
        return {name: round((n - (first.get(name, 0.0) if n >= first.get(name, 0.0) else 0.0)) / seconds, 3)
                for name, n in last.items()} if seconds > 0 else {}

    def figures(self) -> dict[str, dict]:
        """Per router: the last minute's figures and ``spark``, requests/s between scrapes (oldest first)."""
        with self._lock:
            scrapes = list(self.scrapes)
        if len(scrapes) < 2:
            return {}
        (first_t, first), (last_t, last) = scrapes[0], scrapes[-1]
        result = {}
        for router, counts in last.items():
            figures = between(first.get(router), counts, last_t - first_t)
            figures["spark"] = [
                between(a[1].get(router), b[1].get(router, RouterCounts()), b[0] - a[0])["rps"]
                for a, b in zip(scrapes, scrapes[1:], strict=False)
            ][-30:]
            result[router] = figures
        return result
