"""Noise that expires: what the monolith disagrees with itself on, over a recent window.

Each comparison asks the monolith twice; a field whose two answers differ is
noise *for that request* (a clock, a random id, a rename racing the replay).
Whether it is noise for the endpoint is a matter of rate: a field is noisy
while the monolith disagrees with itself on it in at least ``min_rate`` of
its recent comparisons (and at least ``min_count`` times). The window holds
the last ``size`` comparisons no older than ``max_age`` seconds, so noise
learned during a burst of renames is forgotten once the renames stop, and a
later real difference in that field is reported again. A field the monolith
disagrees on only rarely is never noisy as a whole: only the requests where
it did disagree leave it out (Diffy's relative threshold, on one side).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DEFAULT_SIZE = 200
DEFAULT_MAX_AGE = 600.0
DEFAULT_MIN_RATE = 0.1
DEFAULT_MIN_COUNT = 3


@dataclass(frozen=True)
class NoiseRule:
    """When a field counts as noise; the defaults suit a few requests a second."""

    size: int = DEFAULT_SIZE
    max_age: float = DEFAULT_MAX_AGE
    min_rate: float = DEFAULT_MIN_RATE
    min_count: int = DEFAULT_MIN_COUNT


class NoiseWindow:
    """One endpoint's recent self-disagreements; not thread-safe (the caller locks)."""

    def __init__(self, rule: NoiseRule = NoiseRule(), clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self._clock = clock
        self._seen: deque[tuple[float, frozenset[str]]] = deque()
        self._counts: Counter[str] = Counter()

    def observe(self, fresh: Iterable[str]) -> frozenset[str]:
        """Record one comparison's self-disagreements; return what to leave out of its diff."""
        fresh = frozenset(fresh)
        self._seen.append((self._clock(), fresh))
        self._counts.update(fresh)
        self._expire()
        return fresh | self.noisy()

    def rates(self) -> dict[str, float]:
        """Each field the monolith disagreed on in the window, with the share of comparisons."""
        self._expire()
        total = len(self._seen)
        return {p: n / total for p, n in self._counts.items()} if total else {}

    def noisy(self) -> frozenset[str]:
        """The fields noisy for the whole endpoint right now."""
        total = len(self._seen)
        return frozenset(p for p, n in self._counts.items()
                         if n >= self.rule.min_count and n >= self.rule.min_rate * total)

    def _expire(self) -> None:
        oldest = self._clock() - self.rule.max_age
        while self._seen and (len(self._seen) > self.rule.size or self._seen[0][0] < oldest):
            _, gone = self._seen.popleft()
            self._counts.subtract(gone)
            for pattern in gone:
                if self._counts[pattern] <= 0:
                    del self._counts[pattern]
