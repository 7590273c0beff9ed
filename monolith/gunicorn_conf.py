"""Gunicorn settings for Flack: ``gunicorn -c python:monolith.gunicorn_conf monolith.wsgi:app``.

The ``gthread`` worker gives each connection a thread, which WebSockets need
(simple-websocket holds its thread for the socket's life). One worker is the
default: Socket.IO across several workers needs sticky sessions and
``SOCKETIO_MESSAGE_QUEUE``. The schema is migrated once, in the master,
before any worker forks.
"""

from __future__ import annotations

import os

# Join the service registry when STRANGLER_ETCD is set (the local stack sets it): the
# master registers once in when_ready and revokes its lease in on_exit.
from router.gunicorn_hooks import control_socket_settings, on_exit, when_ready  # noqa: F401

bind = os.environ.get("MONOLITH_BIND", "127.0.0.1:5000")
workers = int(os.environ.get("MONOLITH_WORKERS", "1"))
worker_class = "gthread"
threads = int(os.environ.get("MONOLITH_THREADS", "64"))
# open WebSockets would hold a graceful stop for the full default 30 s
graceful_timeout = 5
timeout = 60
loglevel = os.environ.get("MONOLITH_LOGLEVEL", "warning")
# off, or this instance's own path: never the one default path every master shares
globals().update(control_socket_settings())


def migrate_database() -> None:
    """Bring the configured database to the newest schema (run before workers start)."""
    from monolith.config import Config
    from monolith.db import upgrade_database

    config = Config.from_env()
    upgrade_database(config.database_url, config.data_dir / "migrate.lock")


def on_starting(server) -> None:  # noqa: ANN001 (gunicorn's Arbiter)
    """Gunicorn hook, in the master before forking: migrate once."""
    migrate_database()
