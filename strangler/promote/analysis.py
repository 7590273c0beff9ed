"""The pure half of promotion: its options, the figures of one interval, and the verdict.

Nothing here does I/O, so every threshold is unit-tested on exact values
(tests/strangler/promote/test_analysis.py). docs/promotion.md explains the defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from strangler.promote.metrics import Window

DEFAULT_STEPS = (5, 25, 50, 100)
DEFAULT_INTERVAL = 30.0
MAX_INTERVAL = 3600.0
MAX_STEPS = 20
# p99s below the histogram's first bucket (5 ms) cannot be told apart: both are taken as 5 ms.
LATENCY_FLOOR = 0.005
QUANTILE = 0.99


class BadPromotion(ValueError):
    """A promotion option is malformed (one line saying what to write)."""


def parse_steps(text: str) -> tuple[int, ...]:
    """``"5,25,50,100"`` -> (5, 25, 50, 100): whole percentages 1-100, rising, ending at 100."""
    parts = [p.strip().removesuffix("%") for p in str(text).split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise BadPromotion(f"--steps {text!r}: give whole percentages separated by commas, e.g. 5,25,50,100")
    steps = tuple(int(p) for p in parts)
    if any(not 1 <= s <= 100 for s in steps):
        raise BadPromotion(f"--steps {text!r}: every step is a percentage from 1 to 100")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise BadPromotion(f"--steps {text!r}: steps must rise, e.g. 5,25,50,100")
    if steps[-1] != 100:
        raise BadPromotion(f"--steps {text!r}: the last step must be 100 (flipped)")
    if len(steps) > MAX_STEPS:
        raise BadPromotion(f"--steps {text!r}: at most {MAX_STEPS} steps")
    return steps


_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m)?$")


def parse_interval(text: str | float) -> float:
    """``"30s"``, ``"1m"``, ``"1.5"``, ``"500ms"`` -> seconds; from 0.5 s to an hour."""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise BadPromotion(f"--interval {text!r}: give a duration such as 30s, 1m or 500ms")
    seconds = float(match["n"]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match["unit"]]
    if not 0.5 <= seconds <= MAX_INTERVAL:
        raise BadPromotion(f"--interval {text!r}: give between 0.5s and 1h")
    return seconds


def parse_rate(option: str, text: str | float) -> float:
    """``"1%"`` or ``"0.01"`` -> 0.01: a share from 0 to 100 %."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise BadPromotion(f"{option} {text!r}: give a percentage such as 1% (or a share such as 0.01)") from None
    if math.isnan(value) or not 0 <= value <= 1:
        raise BadPromotion(f"{option} {text!r}: give a percentage from 0% to 100%")
    return value


def parse_ratio(option: str, text: str | float) -> float:
    """``"1.5"`` -> 1.5: a ratio of at least 1."""
    try:
        value = float(str(text).strip().removesuffix("x"))
    except ValueError:
        raise BadPromotion(f"{option} {text!r}: give a ratio such as 1.5") from None
    if math.isnan(value) or not 1 <= value <= 1000:
        raise BadPromotion(f"{option} {text!r}: give a ratio from 1 to 1000")
    return value


@dataclass(frozen=True)
class Thresholds:
    """When a step fails (error rate, latency ratio, diff rate) and when there is enough data."""

    max_error_rate: float = 0.01
    max_latency_ratio: float = 1.5
    max_diff_rate: float = 0.01
    min_requests: int = 20

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        """Inverse of to_dict."""
        return cls(**{k: data[k] for k in ("max_error_rate", "max_latency_ratio", "max_diff_rate",
                                           "min_requests") if k in data})


@dataclass(frozen=True)
class Figures:
    """One interval's figures: the candidate's answers, the current backend's, and the comparator's."""

    requests: int
    errors: int
    p99: float | None
    base_requests: int
    base_p99: float | None
    compared: int = 0
    differing: int = 0
    shadowed: bool = False

    @property
    def error_rate(self) -> float | None:
        """The candidate's 5xx share (None without requests)."""
        return self.errors / self.requests if self.requests else None

    @property
    def latency_ratio(self) -> float | None:
        """Candidate p99 / current p99, each at least LATENCY_FLOOR (None when either is unknown)."""
        if self.p99 is None or self.base_p99 is None:
            return None
        return max(self.p99, LATENCY_FLOOR) / max(self.base_p99, LATENCY_FLOOR)

    @property
    def diff_rate(self) -> float | None:
        """differing / compared by the comparator (None without comparisons)."""
        return self.differing / self.compared if self.compared else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived rates."""
        return {**asdict(self), "error_rate": self.error_rate, "latency_ratio": self.latency_ratio,
                "diff_rate": self.diff_rate}

    def line(self) -> str:
        """The figures for people: ``120 req, 0.0% 5xx, p99 12 ms vs 10 ms (1.20x), diff 0.0% of 40``."""
        parts = [f"{self.requests} req", f"{_pct(self.error_rate)} 5xx"]
        if self.latency_ratio is not None:
            parts.append(f"p99 {_ms(self.p99)} vs {_ms(self.base_p99)} ({self.latency_ratio:.2f}x)")
        else:
            parts.append(f"p99 {_ms(self.p99)} vs {_ms(self.base_p99)}")
        if self.shadowed:
            parts.append(f"diff {_pct(self.diff_rate)} of {self.compared}")
        return ", ".join(parts)


def figures(candidate: Window, base: Window | None, compared: int = 0, differing: int = 0,
            shadowed: bool = False) -> Figures:
    """PURE: the Figures of an interval from the two services' windows and the comparator's deltas."""
    return Figures(
        requests=candidate.requests, errors=candidate.errors, p99=candidate.quantile(QUANTILE),
        base_requests=base.requests if base else 0, base_p99=base.quantile(QUANTILE) if base else None,
        compared=compared, differing=differing, shadowed=shadowed)


def verdict(fig: Figures, limits: Thresholds, *, whole: bool = False) -> tuple[str, str]:
    """PURE: ``("pass" | "fail" | "wait", why)`` for one interval.

    ``wait``: fewer than ``min_requests`` candidate answers (or, while shadowed,
    comparisons): not enough data, so neither promote nor roll back. A breach
    of any threshold fails. The latency ratio is judged only when the current
    backend also answered ``min_requests`` (``whole``: it answers nothing of
    the endpoint any more, so only errors and diffs count).
    """
    if fig.shadowed and fig.compared >= limits.min_requests and fig.diff_rate is not None \
            and fig.diff_rate > limits.max_diff_rate:
        return "fail", f"diff rate {_pct(fig.diff_rate)} > {_pct(limits.max_diff_rate)}"
    if fig.requests < limits.min_requests:
        return "wait", f"not enough data: {fig.requests} of {limits.min_requests} requests"
    if fig.error_rate is not None and fig.error_rate > limits.max_error_rate:
        return "fail", f"error rate {_pct(fig.error_rate)} > {_pct(limits.max_error_rate)}"
    ratio = fig.latency_ratio
    if not whole and fig.base_requests >= limits.min_requests and ratio is not None \
            and ratio > limits.max_latency_ratio:
        return "fail", f"p99 {ratio:.2f}x the current backend's > {limits.max_latency_ratio:g}x"
    return "pass", "within every threshold"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"
