"""The tokens service: issues JWTs (checking passwords with ``users``) and revokes them.

No database. Endpoints: ``extracted/tokens/views.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from extracted.common.service import make_app


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the tokens service; *config* entries win over the environment."""
    from extracted.tokens.views import bp, seen_if_users_answers
    from monolith.limits import init_rate_limits

    app = make_app("tokens", config)
    app.extensions["token_hook"] = seen_if_users_answers
    app.register_blueprint(bp)
    init_rate_limits(app)  # POST /api/tokens: the monolith's limit, one budget across backends
    return app
