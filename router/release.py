"""Which release of the project this process runs: the installed package's version.

Read from the package metadata (``importlib.metadata``), so the apps and the
registry need not import the toolkit to know it.
"""

from __future__ import annotations

from functools import cache


@cache
def release() -> str:
    """The installed ``strangler`` distribution's version, or "" when it is not installed."""
    # importlib.metadata costs ~40 ms to import: only when a release is asked for.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("strangler")
    except PackageNotFoundError:
        return ""
