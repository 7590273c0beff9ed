"""Hostile input for tests: messages built to make rendering slow, and Hypothesis strategies.

Importable as ``hostile`` from every test (``tests/conftest.py`` puts this
directory on ``sys.path``).
"""

from __future__ import annotations

from monolith.models import SOURCE_MAX

# pieces that made markdown or bleach backtrack, each repeated to the cap
HOSTILE_PIECES = ["[", "![", "<b>", "<i><b>", "*a", "_a", "[a](", "`a", "(", "a-", "[*", "&"]


def hostile_source(piece: str, size: int = SOURCE_MAX) -> str:
    """*piece* repeated to exactly *size* characters."""
    return (piece * (size // len(piece) + 1))[:size]
