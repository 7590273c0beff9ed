"""Which release of the project this process runs: the package's version, and the instance's label.

Read from the package metadata (``importlib.metadata``), so the apps and the
registry need not import the toolkit to know it.
"""

from __future__ import annotations

import os
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


def instance_release() -> str:
    """This instance's release label (``STRANGLER_RELEASE``, set by whoever started it), "" if none.

    Read at call time: the same process image may serve under any label.
    """
    return os.environ.get("STRANGLER_RELEASE", "")
