"""Gunicorn settings for any WSGI app that should join the service registry untouched.

``strangler init`` writes a monolith's command with it, so a user's own app
runs on the platform without a line of it changing::

    gunicorn -c python:router.gunicorn_conf --bind 127.0.0.1:5000 "myapp:create_app()"

The master registers once when ready and leaves on exit (router.gunicorn_hooks,
configured by the ``STRANGLER_*`` variables the local stack sets); the
``gthread`` worker gives each connection a thread. ``STRANGLER_WORKERS``
(default 1), ``STRANGLER_THREADS`` (default 16) and ``STRANGLER_LOGLEVEL``
(default ``warning``) tune it. Nothing is migrated: the app does what it
always did on start.
"""

from __future__ import annotations

import os

from router.gunicorn_hooks import control_socket_settings, on_exit, when_ready  # noqa: F401

bind = os.environ.get("STRANGLER_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("STRANGLER_WORKERS", "1"))
worker_class = "gthread"
threads = int(os.environ.get("STRANGLER_THREADS", "16"))
graceful_timeout = 5
timeout = 60
loglevel = os.environ.get("STRANGLER_LOGLEVEL", "warning")
# off, or this instance's own path: never the one default path every master shares
globals().update(control_socket_settings())
