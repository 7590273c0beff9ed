"""strangler: move a monolith's endpoints, one at a time, to extracted services."""

from router.release import release


def __getattr__(name: str) -> str:
    # Computed on first use: reading the package metadata costs ~40 ms, which
    # every command would otherwise pay at start-up.
    if name == "__version__":
        return release() or "0.1.0"  # the package metadata is the one authority
    raise AttributeError(f"module 'strangler' has no attribute {name!r}")
