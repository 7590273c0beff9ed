"""How the suite is spread over parallel workers (pytest-xdist, ``--dist loadgroup``).

Every test joins a group: its module, plus the params of the module's
module-scoped fixtures. A module's shared stack therefore starts once, on one
worker, while a module that starts one stack per database engine
(``platform`` params ``sqlite``/``postgresql``/``mariadb``) spreads over three.

Groups are sent out longest first, so the long ones never start last and
leave the other workers idle (``--no-loadscope-reorder`` keeps this order).
How long a group takes comes from ``tests/durations.txt`` (seconds and
group, one per line, measured on this project's own runs; rewrite it with
``python scripts/test_durations.py LOG`` from a ``--durations=0`` run); a
group it does not name counts a tenth of a second per test.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).resolve().parent.parent / "durations.txt"
UNKNOWN_PER_TEST = 0.1


def group_of(item: pytest.Item) -> str:
    """The module of *item*, plus the ids of its module-scoped params (``file.py[sqlite]``)."""
    module = item.nodeid.split("::", 1)[0]
    callspec = getattr(item, "callspec", None)
    info = getattr(item, "_fixtureinfo", None)
    if callspec is None or info is None:
        return module
    scoped = []
    for name in sorted(callspec.params):
        definitions = info.name2fixturedefs.get(name) or ()
        if definitions and definitions[-1].scope in ("module", "package", "session"):
            value = callspec.params[name]
            scoped.append(str(value) if isinstance(value, (str, int)) else f"{name}{callspec.indices[name]}")
    return f"{module}[{','.join(scoped)}]" if scoped else module


def read_durations(path: Path = DURATIONS) -> dict[str, float]:
    """``group -> seconds`` from *path*; an unreadable or missing file gives nothing."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in lines:
        seconds, _, group = line.strip().partition(" ")
        try:
            found[group.strip()] = float(seconds)
        except ValueError:
            continue
    return found


def spread(items: list[pytest.Item], durations: dict[str, float]) -> None:
    """Mark each item with its group and order the groups longest first (in place, stable)."""
    groups: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        group = group_of(item)
        item.add_marker(pytest.mark.xdist_group(group))
        groups[group].append(item)

    def cost(group: str) -> float:
        return durations.get(group, UNKNOWN_PER_TEST * len(groups[group]))

    order = sorted(groups, key=cost, reverse=True)
    items[:] = [item for group in order for item in groups[group]]
