"""Gunicorn settings of the console (see :func:`strangler.console.cli.console_argv`).

One worker process (its sessions, its cache and its minute of Traefik
scrapes live in it) with a few threads: a page polls once a second.
"""

from __future__ import annotations

import os

from router.gunicorn_hooks import control_socket_settings

bind = os.environ.get("STRANGLER_BIND", "127.0.0.1:8082")
workers = 1  # the CSRF secret, the cache and the scrapes are this process's
worker_class = "gthread"
threads = int(os.environ.get("STRANGLER_THREADS", "4"))
graceful_timeout = 5
timeout = 60
loglevel = os.environ.get("STRANGLER_LOGLEVEL", "warning")
proc_name = "strangler-console"
globals().update(control_socket_settings())
