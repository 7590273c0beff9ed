"""The ranges of the commands' numeric options, in one place.

Every number a command takes is checked by Click before the command runs, so
a bad value is a usage error (exit 2) naming the option and the range, never
a traceback or an exit status the command gives another meaning (``compare``
exits 1 for "they differ").
"""

from __future__ import annotations

import math
from typing import Any

import click

# an hour: beyond that a wait is a mistake, and socket timeouts overflow far above it
MAX_WAIT = 3600.0
# rows per transaction of `migrate copy`: bigger chunks only hold locks and memory longer
MAX_CHUNK = 100_000


class Seconds(click.FloatRange):
    """A finite number of seconds in a range (``nan`` and ``inf`` are refused too)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The value as a float, or a usage error that names the range."""
        number = super().convert(value, param, ctx)
        if math.isnan(number):  # a NaN compares False with both ends, so the range let it in
            self.fail(f"{value!r} is not a number of seconds in the range {self._describe_range()}.",
                      param, ctx)
        return number


# seconds to wait for an answer or a confirmation
WAIT = Seconds(min=0, min_open=True, max=MAX_WAIT)
CHUNK = click.IntRange(1, MAX_CHUNK)
PASSES = click.IntRange(min=0)
# between two sync passes: 50 ms keeps a follower from spinning; an hour is the longest useful wait
SYNC_INTERVAL = Seconds(min=0.05, max=MAX_WAIT)
