"""Gunicorn settings of the comparator.

``gunicorn -c python:strangler.shadow.gunicorn_conf --bind HOST:PORT strangler.shadow.wsgi:app``

One worker process (the queue, the learned noise and the counters live in
it) with threads answering Traefik; the master joins the registry as
backend ``comparator`` (``router.gunicorn_hooks``) when STRANGLER_ETCD is set.
"""

from __future__ import annotations

import os

from router.gunicorn_hooks import control_socket_settings, on_exit, when_ready

os.environ.setdefault("STRANGLER_BACKEND", "comparator")

bind = os.environ.get("STRANGLER_BIND", "127.0.0.1:0")
workers = 1  # one queue; more would split the noise learning and the counts
worker_class = "gthread"
threads = int(os.environ.get("STRANGLER_THREADS", "8"))
graceful_timeout = 5
timeout = 60
loglevel = os.environ.get("STRANGLER_LOGLEVEL", "warning")
proc_name = "strangler-comparator"
# off, or this instance's own path: never the one default path every master shares
globals().update(control_socket_settings())

__all__ = ["on_exit", "when_ready"]


def worker_exit(server: object, worker: object) -> None:
    """Gunicorn hook (worker, at exit): write the counts not yet flushed."""
    app = getattr(worker, "wsgi", None)
    comparator = getattr(app, "extensions", {}).get("comparator") if app else None
    if comparator is not None:
        comparator.stop(timeout=1)
