"""The socketio service: Flack's Socket.IO endpoint at ``/socket.io/``, on its own.

Client events (``ping_user``, ``post_message``, disconnect) become HTTP calls
to the users and messages services through the load balancer; model updates
those services emit into the Redis message queue reach every client
connected here, whichever process emitted them.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_socketio import SocketIO

__all__ = ["create_app", "socketio"]

socketio = SocketIO()


def create_app(config: Any = None) -> Flask:
    """Build the socketio service; *config* (a mapping or ServiceConfig) wins over the environment.

    ``SOCKETIO_MESSAGE_QUEUE`` (a Redis URL) is what connects it to the
    services that emit: without it, clients here hear nothing from them.
    """
    from extracted.common.service import make_app
    from extracted.socketio import events  # noqa: F401  (handlers attach before init_app)
    from monolith import socketio_guard

    app = make_app("socketio", config)
    # as in the monolith: no queue manager left over from an earlier app of this process
    socketio.server_options.pop("client_manager", None)
    socketio.init_app(
        app,
        async_mode="threading",
        message_queue=app.config.get("SOCKETIO_MESSAGE_QUEUE") or None,
    )
    # python-engineio lets one anonymous client hold a request thread for ever
    socketio_guard.guard(app, socketio)
    return app


