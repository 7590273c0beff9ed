"""Traefik's Prometheus metrics, scraped and differenced over an interval, and the comparator's counts.

Two series per Traefik service are read (``service`` label ``<name>@etcd``):

- ``traefik_service_requests_total{code, method, protocol, service}``: answers by status;
- ``traefik_service_request_duration_seconds_bucket{code, method, protocol, service, le}``:
  the latency histogram (buckets set in ``router.traefik.METRIC_BUCKETS``).

Both are counters, so what happened during an interval is the difference of
two scrapes, summed over the other labels (and over every Traefik scraped).
A counter that went down means Traefik restarted: that window is unknown.
Parsing and differencing are pure; :func:`scrape` is the one network call.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REQUESTS = "traefik_service_requests_total"
BUCKETS = "traefik_service_request_duration_seconds_bucket"
_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


class MetricsError(RuntimeError):
    """Traefik's metrics could not be read (one line)."""


@dataclass
class Counters:
    """One service's counters at one moment: answers per status code, histogram per bucket."""

    codes: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (bucket bounds as strings; ``+Inf`` included)."""
        return {"codes": dict(self.codes), "buckets": {repr(le): n for le, n in self.buckets.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Counters:
        """Inverse of to_dict."""
        return cls(dict(data.get("codes") or {}), {float(le): n for le, n in (data.get("buckets") or {}).items()})


Snapshot = dict[str, Counters]  # Traefik service name (no @provider) -> counters


def parse(text: str) -> Snapshot:
    """PURE: the two service series of a Prometheus text exposition, summed per service."""
    found: Snapshot = {}
    for line in text.splitlines():
        if not line.startswith((REQUESTS, BUCKETS)):
            continue
        match = _LINE.match(line)
        if not match or match["name"] not in (REQUESTS, BUCKETS):
            continue
        labels = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"] or "")}
        service = labels.get("service", "").partition("@")[0]
        try:
            value = float(match["value"])
        except ValueError:
            continue
        counters = found.setdefault(service, Counters())
        if match["name"] == REQUESTS:
            code = labels.get("code", "")
            counters.codes[code] = counters.codes.get(code, 0.0) + value
        else:
            le = float(labels.get("le", "+Inf"))
            counters.buckets[le] = counters.buckets.get(le, 0.0) + value
    return found


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """PURE: several Traefiks' snapshots as one (every counter summed)."""
    total: Snapshot = {}
    for snapshot in snapshots:
        for service, counters in snapshot.items():
            into = total.setdefault(service, Counters())
            for code, n in counters.codes.items():
                into.codes[code] = into.codes.get(code, 0.0) + n
            for le, n in counters.buckets.items():
                into.buckets[le] = into.buckets.get(le, 0.0) + n
    return total


def scrape(urls: Iterable[str], timeout: float = 2.0) -> Snapshot:
    """Read ``<url>/metrics`` of every Traefik (its ``traefik`` entrypoint) and merge them."""
    snapshots = []
    for url in urls:
        try:
            answer = requests.get(url.rstrip("/") + "/metrics", timeout=timeout)
        except requests.RequestException as exc:
            raise MetricsError(f"Traefik's metrics at {url}/metrics unreachable: {exc.__class__.__name__}") from None
        if answer.status_code != 200:
            raise MetricsError(f"Traefik's metrics at {url}/metrics answered {answer.status_code}; "
                               "its static config needs metrics.prometheus on the traefik entrypoint")
        snapshots.append(parse(answer.text))
    return merge(snapshots)


@dataclass(frozen=True)
class Window:
    """What one service answered between two scrapes."""

    requests: int
    errors: int  # 5xx
    buckets: tuple[tuple[float, float], ...]  # cumulative (le, count), ascending

    @property
    def error_rate(self) -> float | None:
        """5xx / requests (None without requests)."""
        return self.errors / self.requests if self.requests else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile of latency in seconds (see :func:`histogram_quantile`)."""
        return histogram_quantile(q, self.buckets)


def window(before: Snapshot, after: Snapshot, service: str) -> Window | None:
    """PURE: ``service``'s answers between two snapshots; None when a counter went down (a restart)."""
    old, new = before.get(service, Counters()), after.get(service, Counters())
    codes = {code: new.codes.get(code, 0.0) - old.codes.get(code, 0.0) for code in set(old.codes) | set(new.codes)}
    buckets = {le: new.buckets.get(le, 0.0) - old.buckets.get(le, 0.0) for le in set(old.buckets) | set(new.buckets)}
    if any(n < 0 for n in [*codes.values(), *buckets.values()]):
        return None
    errors = sum(n for code, n in codes.items() if code.startswith("5"))
    return Window(round(sum(codes.values())), round(errors), tuple(sorted(buckets.items())))


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """PURE: PromQL's ``histogram_quantile`` over cumulative ``(le, count)`` pairs.

    Linear interpolation inside the bucket holding the rank; a rank in the
    ``+Inf`` bucket gives the highest finite bound. None without observations.
    """
    pairs = sorted(buckets)
    if not pairs or pairs[-1][1] <= 0:
        return None
    total = pairs[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in pairs:
        if count >= rank:
            if math.isinf(le):
                return lower_bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return lower_bound


def diff_counts(store: Path | str, endpoints: Iterable[str]) -> tuple[int, int]:
    """``(compared, differing)`` so far for ``endpoints`` in the comparator's store (0, 0 without one).

    The comparator writes these counters every 0.5 s (strangler/shadow/store.py);
    the diff rate of an interval is the difference of two reads.
    """
    path = Path(store)
    names = list(endpoints)
    if not path.exists() or not names:
        return 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        marks = ",".join("?" for _ in names)
        row = db.execute(
            f"SELECT COALESCE(SUM(compared), 0), COALESCE(SUM(differing), 0) FROM endpoints WHERE endpoint IN ({marks})",  # noqa: S608
            names).fetchone()
    except sqlite3.OperationalError:  # the comparator has not created its tables yet
        return 0, 0
    finally:
        db.close()
    return int(row[0]), int(row[1])
