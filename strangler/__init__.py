"""strangler: move a monolith's endpoints, one at a time, to extracted services."""

__version__ = "0.1.0"
