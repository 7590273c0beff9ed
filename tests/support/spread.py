"""How the suite is spread over parallel workers (pytest-xdist, ``--dist loadfile``).

Every module goes whole to one worker, so a module's shared stack starts
once. Modules are sent out longest first, so the long ones never start last
and leave the other workers idle (``--no-loadscope-reorder`` keeps this
order). How long a module takes comes from ``tests/durations.txt`` (seconds
and module, one per line, measured on this project's own runs; rewrite it
with ``python scripts/test_durations.py LOG`` from a ``--durations=0`` run);
a module it does not name counts a tenth of a second per test.

(``--dist loadgroup`` could split a module by its module-scoped params, but
pytest-xdist 3.8 renames the items through an attribute pytest 9 no longer
reads, and every test then went to a worker of its own.)
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).resolve().parent.parent / "durations.txt"
UNKNOWN_PER_TEST = 0.1


def module_of(item: pytest.Item) -> str:
    """The file *item* is in, as its node id starts (``tests/e2e/test_shadow.py``)."""
    return item.nodeid.split("::", 1)[0]


def read_durations(path: Path = DURATIONS) -> dict[str, float]:
    """``module -> seconds`` from *path*; an unreadable or missing file gives nothing."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in lines:
        seconds, _, module = line.strip().partition(" ")
        try:
            found[module.strip()] = float(seconds)
        except ValueError:
            continue
    return found


def spread(items: list[pytest.Item], durations: dict[str, float]) -> None:
    """Order the modules longest first, keeping each module's own order (in place)."""
    modules: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        modules[module_of(item)].append(item)

    def cost(module: str) -> float:
        return durations.get(module, UNKNOWN_PER_TEST * len(modules[module]))

    order = sorted(modules, key=cost, reverse=True)
    items[:] = [item for module in order for item in modules[module]]
