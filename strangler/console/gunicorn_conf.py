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


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's Arbiter
    """Before binding: an address beyond loopback needs STRANGLER_CONSOLE_PASSWORD, whatever
    --bind or STRANGLER_BIND say (the app only sees STRANGLER_CONSOLE_HOST, which may not match)."""
    import sys

    from strangler.console import ConsoleConfigError, check_binding

    for address in server.cfg.bind:
        if address.startswith("unix:"):
            continue  # a socket file: this machine only
        host = address.rpartition(":")[0] if ":" in address.lstrip("[").split("]")[-1] else address
        try:
            check_binding(host.strip("[]") or "0.0.0.0", os.environ.get("STRANGLER_CONSOLE_PASSWORD"))
        except ConsoleConfigError as exc:
            print(f"strangler console: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
