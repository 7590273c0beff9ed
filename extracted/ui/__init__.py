"""The ui service: Flack's browser client (``GET /`` and ``/static/...``), unchanged.

It registers the monolith's own ``main`` blueprint, so the page and its files
are the monolith's bytes; all data comes from the API and Socket.IO, which
the load balancer routes to whichever backend serves them.
"""

from __future__ import annotations

from typing import Any

from flask import Flask


def create_app(config: Any = None) -> Flask:
    """Build the ui service; *config* (a mapping or ServiceConfig) wins over the environment."""
    from extracted.common.service import make_app
    from monolith.main import bp

    app = make_app("ui", config)
    app.register_blueprint(bp)
    # Flask gives every app a /static/<filename> rule of its own, matched before
    # the blueprint's identical one: let it serve the client's files too
    # (as in the monolith, whose app and blueprint share monolith/static)
    app.view_functions["static"] = bp.send_static_file
    return app
