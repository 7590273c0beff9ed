"""The users service: registration, listing, get/edit, and what other services need.

Owns the ``users`` table in its own database (``DATABASE_URL``, SQLite in
the data dir by default; alembic environment ``migrations/users/``).
Endpoints: ``extracted/users/views.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask

from extracted.common.service import init_database, make_app

logger = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the users service; *config* entries win over the environment.

    Migrates an empty database and (outside testing) starts the sweep that
    marks users offline after ``ONLINE_TIMEOUT`` seconds without activity.
    """
    from extracted.users.models import db
    from extracted.users.views import api, internal, ping_token_user
    from monolith.limits import init_rate_limits

    app = make_app("users", config)
    init_database(app, db)
    app.extensions["token_hook"] = ping_token_user
    app.register_blueprint(api)
    app.register_blueprint(internal)
    init_rate_limits(app)  # POST /api/users: the monolith's limit, one budget across backends
    if app.config["START_OFFLINE_TASK"]:
        start_offline_task(app)
    return app


def start_offline_task(app: Flask) -> threading.Event:
    """Start a daemon thread marking idle users offline; set the returned event to stop it."""
    stop = app.extensions.setdefault("offline_task_stop", threading.Event())
    thread = threading.Thread(target=_offline_loop, args=(app, stop), daemon=True,
                              name="users-offline-sweep")
    thread.start()
    return stop


def _offline_loop(app: Flask, stop: threading.Event) -> None:
    from extracted.users.models import mark_inactive_users_offline

    interval = app.config["OFFLINE_CHECK_INTERVAL"]
    while not stop.wait(interval):
        try:
            with app.app_context():
                mark_inactive_users_offline()
        except Exception:  # a database hiccup must not end presence tracking for good
            logger.exception("marking inactive users offline failed; retrying in %ss", interval)
