"""Flack, the chat monolith: app factory and the extensions it binds.

Extensions are created unbound here and attached in :func:`create_app`, so
importing the package builds nothing and tests make as many apps as they like.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_socketio import SocketIO

# ``db`` (the SQLAlchemy extension) lives in the submodule ``monolith.db``
# beside the schema helpers; importing it here, first, makes the package
# attribute ``monolith.db`` the extension rather than the submodule.
from monolith.db import MonolithSession, db

__all__ = ["MonolithSession", "create_app", "db", "socketio"]

logger = logging.getLogger(__name__)

socketio = SocketIO()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flack app; *config* entries win over the environment.

    Migrates an empty database, picks the revocation store, starts the link
    expander, limits logins and registrations per client and (outside
    testing) starts the background task that marks idle users offline.
    """
    # handlers must be registered before the first init_app copies them
    from monolith import events, socketio_guard
    from monolith.config import Config
    from monolith.db import configure_engine, defer_reads, ensure_schema
    from monolith.limits import init_rate_limits
    from monolith.links import LinkExpander

    settings = Config.from_env(config)
    app = Flask(__name__)
    parsed = settings.flask_settings()
    # extra Flask settings a caller passes (e.g. AUTO_MIGRATE) go through as given
    app.config.update({k: v for k, v in (config or {}).items() if k.isupper() and k not in parsed})
    app.config.update(parsed)

    db.init_app(app)
    # init_app keeps a queue manager made for an earlier app of this process in its
    # options even when this app has no queue: each app gets its own (or none)
    socketio.server_options.pop("client_manager", None)
    socketio.init_app(
        app, async_mode="threading", message_queue=settings.socketio_message_queue
    )
    # python-engineio lets one anonymous client hold a request thread for ever
    socketio_guard.guard(app, socketio)
    with app.app_context():
        configure_engine(db.engine)
    defer_reads(app)
    if app.config.get("AUTO_MIGRATE", True):
        ensure_schema(settings.database_url, settings.data_dir / "migrate.lock")
    _platform_settings(app, config)

    app.extensions["revocation_store"] = _revocation_store(
        _platform_store(config, settings.token_ttl) or settings.revocation_store, settings
    )
    app.extensions["link_expander"] = LinkExpander(
        allow_private=settings.link_expansion_allow_private,
        timeout=settings.link_expansion_timeout,
        max_bytes=settings.link_expansion_max_bytes,
    )
    _register_blueprints(app)
    init_rate_limits(app)
    if settings.start_offline_task:
        events.start_offline_task(app)
    return app


def _platform_settings(app: Flask, config: Mapping[str, Any] | None) -> None:
    """On the platform: the load balancer's URL (``STRANGLER_LB_URL``) and the write-through.

    While a service's tables are linked with the monolith's, every commit
    that changes users or messages is upserted into the service databases
    named by ``STRANGLER_WRITE_THROUGH`` (see datalink.writethrough).
    """
    import os

    from datalink.writethrough import install_in_app
    from monolith.models import Message, User

    given = config or {}
    lb_url = given["STRANGLER_LB_URL"] if "STRANGLER_LB_URL" in given else os.environ.get("STRANGLER_LB_URL")
    app.config["STRANGLER_LB_URL"] = lb_url.rstrip("/") if lb_url else None
    install_in_app(app, MonolithSession, {"users": User, "messages": Message})


def _platform_store(config: Mapping[str, Any] | None, token_ttl: float) -> Any:
    """On the platform (``STRANGLER_ETCD`` set) and with no store chosen: revocations in etcd.

    Every backend then refuses the same revoked tokens, whichever one revoked
    them; a user's revocation is kept *token_ttl* (``TOKEN_TTL``) seconds.
    """
    import os

    chosen = (config or {}).get("REVOCATION_STORE") or os.environ.get("REVOCATION_STORE")
    etcd_url = (config or {}).get("STRANGLER_ETCD") or os.environ.get("STRANGLER_ETCD")
    if chosen or not etcd_url:
        return None
    from router.revocation import platform_store

    return platform_store(etcd_url, token_ttl)


def _revocation_store(choice: Any, settings: Any) -> Any:
    from monolith.revocation import DatabaseRevocationStore

    if choice == "database":
        return DatabaseRevocationStore(token_ttl=settings.token_ttl)
    if isinstance(choice, str):
        from monolith.config import ConfigError

        raise ConfigError(f"REVOCATION_STORE must be 'database' or a store object, not {choice!r}")
    return choice


def _register_blueprints(app: Flask) -> None:
    from monolith.api import bp as api_bp
    from monolith.api.errors import register_error_handlers
    from monolith.api.health import bp as health_bp
    from monolith.main import bp as main_bp

    app.register_blueprint(api_bp, url_prefix="/api")
    app.register_blueprint(health_bp)
    app.register_blueprint(main_bp)
    register_error_handlers(app)
