"""Gunicorn settings every service shares, and its registry and migration hooks.

A service's ``gunicorn_conf.py`` is one call::

    from extracted.common.gunicorn import service_settings

    globals().update(service_settings("users", migrate=True))

so ``gunicorn -c python:extracted.users.gunicorn_conf --bind HOST:PORT
extracted.users.wsgi:app`` serves it. As for the monolith: the ``gthread``
worker (WebSockets hold a thread each), the master joins the service
registry once (``when_ready``, when ``STRANGLER_ETCD`` is set) and leaves it
on exit, and a service that owns a database migrates it once, in the master,
before any worker forks. ``STRANGLER_WORKERS``, ``STRANGLER_THREADS`` and
``STRANGLER_LOGLEVEL`` tune it; gunicorn's control socket is off unless
``STRANGLER_CONTROL_SOCKET`` gives this instance a path of its own.
"""

from __future__ import annotations

import os
from typing import Any

from router.gunicorn_hooks import control_socket_settings, on_exit, when_ready


def migrate_service(name: str) -> None:
    """Bring service *name*'s configured database to its newest schema."""
    from extracted.common.config import ServiceConfig
    from monolith.db import upgrade_database

    config = ServiceConfig.from_env(name)
    upgrade_database(config.database_url, config.migrate_lock, name=name)


def service_settings(name: str, migrate: bool = False) -> dict[str, Any]:
    """Return the gunicorn settings of service *name* (``migrate``: it owns a database)."""
    settings: dict[str, Any] = {
        "bind": os.environ.get("STRANGLER_BIND", "127.0.0.1:0"),
        "workers": int(os.environ.get("STRANGLER_WORKERS", "1")),
        "worker_class": "gthread",
        "threads": int(os.environ.get("STRANGLER_THREADS", "32")),
        # open WebSockets would hold a graceful stop for the full default 30 s
        "graceful_timeout": 5,
        "timeout": 60,
        "loglevel": os.environ.get("STRANGLER_LOGLEVEL", "warning"),
        "proc_name": f"strangler-{name}",
        "when_ready": when_ready,
        "on_exit": on_exit,
        # off, or this instance's own path: never the one default path every master shares
        **control_socket_settings(),
    }
    if migrate:

        def on_starting(server: Any) -> None:
            """Gunicorn hook, in the master before forking: migrate once."""
            migrate_service(name)

        settings["on_starting"] = on_starting
    return settings
