"""``GET /healthz``: what Traefik and the platform poll to know the monolith can serve."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from monolith import db
from router.release import instance_release, release

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # noqa: ANN201
    """Anyone may call this. 200 ``{"status": "ok", "version", "release"}`` once the database answers, else 503."""
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        return jsonify({"status": "unavailable", "error": f"database: {type(exc).__name__}",
                        "version": release(), "release": instance_release()}), 503
    return jsonify({"status": "ok", "version": release(), "release": instance_release()})
