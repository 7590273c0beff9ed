"""The skeleton every service's app factory starts from: :func:`make_app`.

It gives a service the monolith's JSON errors, ``GET /healthz``, the
revocation store, the load-balancer client and a way to push
``updated_model`` to every Socket.IO client (:func:`emit_model`), and turns
"a service I need is down" into a clean 503 JSON answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, jsonify, request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from extracted.common.config import ServiceConfig
from router.lbclient import LBClient, ServiceUnavailable
from router.release import instance_release, release

logger = logging.getLogger(__name__)

# app.config keys a caller may set to objects instead of environment strings
OBJECT_SETTINGS = ("REVOCATION_STORE", "LB_CLIENT")


def make_app(
    name: str,
    config: ServiceConfig | Mapping[str, Any] | None = None,
    import_name: str | None = None,
) -> Flask:
    """Build the Flask app of service *name* (its blueprints are the caller's to add).

    *config* is a :class:`ServiceConfig` or a mapping winning over the
    environment. A mapping may also carry ``REVOCATION_STORE`` (a store
    object; default: etcd at ``STRANGLER_ETCD``, else none, and token checks
    answer 503) and ``LB_CLIENT`` (an :class:`LBClient`), and any other
    upper-case Flask setting, passed through as given.
    """
    mapping: Mapping[str, Any] = {} if isinstance(config, ServiceConfig) or config is None else config
    settings = config if isinstance(config, ServiceConfig) else ServiceConfig.from_env(name, mapping)
    app = Flask(import_name or f"extracted.{name}")
    parsed = settings.flask_settings()
    app.config.update({k: v for k, v in mapping.items() if k.isupper() and k not in parsed})
    app.config.update(parsed)
    app.extensions["service_config"] = settings
    app.extensions["revocation_store"] = mapping.get("REVOCATION_STORE") or _etcd_store(settings)
    app.extensions["lb"] = mapping.get("LB_CLIENT") or LBClient(settings.lb_url)
    app.extensions["socketio_emitter"] = _emitter(settings.socketio_message_queue)
    _register_errors(app)
    app.add_url_rule("/healthz", "healthz", healthz)
    return app


def _etcd_store(settings: ServiceConfig) -> Any:
    if not settings.etcd_url:
        return None
    from router.revocation import platform_store

    return platform_store(settings.etcd_url, settings.token_ttl)


def _emitter(url: str | None) -> Any:
    if not url:
        return None
    from flask_socketio import SocketIO

    # no app: a write-only server that only publishes to the queue; the
    # socketio service (or the monolith) delivers to its connected clients
    return SocketIO(message_queue=url, async_mode="threading")


def _register_errors(app: Flask) -> None:
    from monolith.api.errors import register_error_handlers
    from router.etcd import EtcdUnavailable

    register_error_handlers(app)

    @app.before_request
    def internal_callers_get_json() -> None:
        # the monolith's handlers answer JSON to API paths and JSON-preferring
        # clients; /internal/ paths are API paths too, whatever the caller accepts
        if request.path.startswith("/internal/"):
            request.environ.setdefault("HTTP_ACCEPT", "application/json")

    @app.errorhandler(ServiceUnavailable)
    def service_unavailable(error: ServiceUnavailable):  # noqa: ANN202
        return jsonify({"error": str(error)}), 503

    @app.errorhandler(EtcdUnavailable)
    def etcd_unavailable(error: EtcdUnavailable):  # noqa: ANN202
        logger.warning("etcd unavailable: %s", error)
        return jsonify({"error": "the token revocation store (etcd) is unavailable"}), 503


def healthz():  # noqa: ANN201
    """Anyone may call this. 200 ``{"status": "ok", "service", "version", "release"}``; 503 if the database doesn't answer."""
    name = current_app.config["SERVICE_NAME"]
    database = current_app.extensions.get("sqlalchemy")  # only services that own data
    if database is not None:
        try:
            database.session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            database.session.rollback()
            return jsonify({"status": "unavailable", "service": name, "version": release(),
                            "release": instance_release(),
                            "error": f"database: {type(exc).__name__}"}), 503
    return jsonify({"status": "ok", "service": name, "version": release(), "release": instance_release()})


def emit_model(class_name: str, model: dict[str, Any]) -> None:
    """Push ``updated_model`` ``{"class", "model"}`` to every Socket.IO client (needs an app context).

    Goes through the Redis queue (``SOCKETIO_MESSAGE_QUEUE``); without one it
    is a no-op. A failed push is logged, never raised: the change it reports
    is already committed.
    """
    emitter = current_app.extensions.get("socketio_emitter")
    if emitter is None:
        logger.debug("no SOCKETIO_MESSAGE_QUEUE: %s %s not pushed", class_name, model.get("id"))
        return
    try:
        emitter.emit("updated_model", {"class": class_name, "model": model})
    except Exception:  # the commit stands; a lost push must not fail the request
        logger.exception("could not push updated_model for %s %s", class_name, model.get("id"))


def init_database(app: Flask, db: Any, name: str | None = None) -> None:
    """Bind *db* (the service's own ``SQLAlchemy()``) to *app*; migrate an empty database.

    Uses the alembic environment ``migrations/<name>/`` (default: the service
    name). ``AUTO_MIGRATE = False`` in the config skips the migration. With
    ``STRANGLER_WRITE_THROUGH`` set (config or environment), commits to the
    service's tables are written through to the linked monolith database.
    """
    from datalink.writethrough import install_in_app
    from monolith.db import configure_engine, ensure_schema

    settings: ServiceConfig = app.extensions["service_config"]
    db.init_app(app)
    with app.app_context():
        configure_engine(db.engine)
    if app.config.get("AUTO_MIGRATE", True):
        ensure_schema(settings.database_url, settings.migrate_lock, name=name or settings.name)
    install_in_app(app, db.session, db.metadata.tables)
