"""strangler: move a monolith's endpoints, one at a time, to extracted services."""

from router.release import release

__version__ = release() or "0.1.0"  # the package metadata is the one authority
