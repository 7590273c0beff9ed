"""The messages service: Flack's ``/api/messages``, owning the messages table.

Rendering and link expansion are the monolith's (``monolith.render``,
``monolith.links``); users are reached only over HTTP, through the load
balancer; every change is pushed to Socket.IO clients through the Redis
message queue.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from extracted.messages.models import db

__all__ = ["create_app", "db"]


def create_app(config: Any = None) -> Flask:
    """Build the messages service; *config* (a mapping or ServiceConfig) wins over the environment.

    Migrates an empty database (``migrations/messages``) unless ``AUTO_MIGRATE``
    is false, and starts the link expander.
    """
    from extracted.common.service import init_database, make_app
    from extracted.messages.views import SeenMarks, bp, mark_seen_if_up
    from monolith.db import defer_reads
    from monolith.links import LinkExpander

    app = make_app("messages", config)
    init_database(app, db)
    # Its GETs write nothing here (the user is marked seen in users, over HTTP), so on
    # SQLite they read in deferred transactions, never queued behind a writer.
    defer_reads(app)
    app.extensions["token_hook"] = mark_seen_if_up
    app.extensions["seen_marks"] = SeenMarks()
    app.extensions["link_expander"] = LinkExpander(
        allow_private=app.config["LINK_EXPANSION_ALLOW_PRIVATE"],
        timeout=app.config["LINK_EXPANSION_TIMEOUT"],
        max_bytes=app.config["LINK_EXPANSION_MAX_BYTES"],
    )
    app.register_blueprint(bp, url_prefix="/api")
    return app
