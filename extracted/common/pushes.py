"""Stamp and push model changes: what the monolith's models do, for a service's own session.

``track_pushes(ServiceSession, (Model, ...))`` makes every flush of those
models set ``created_at`` (new rows) and ``updated_at`` (new or changed
rows), and every commit push each changed row to all Socket.IO clients with
:func:`extracted.common.service.emit_model` — once the commit succeeded, with
the values written, so clients never hear of a change that was rolled back.
Models need integer ``id``, ``created_at``, ``updated_at`` and ``to_dict()``.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event

CHANGED_KEY = "service_changed_models"
PENDING_KEY = "service_pending_pushes"


def timestamp() -> int:
    """Return the current time as integer epoch seconds."""
    return int(time.time())


def track_pushes(session_class: type, models: tuple[type, ...]) -> None:
    """Register the stamp-and-push listeners on *session_class* for *models*."""

    @event.listens_for(session_class, "before_flush")
    def _stamp(session: Any, flush_context: Any, instances: Any) -> None:
        now = timestamp()
        changed = session.info.setdefault(CHANGED_KEY, [])
        for obj in session.new:
            if isinstance(obj, models):
                obj.created_at = obj.created_at or now
                obj.updated_at = now
                changed.append(obj)
        for obj in session.dirty:
            if isinstance(obj, models) and session.is_modified(obj, include_collections=False):
                obj.updated_at = now
                changed.append(obj)

    @event.listens_for(session_class, "after_flush_postexec")
    def _collect(session: Any, flush_context: Any) -> None:
        # ids are assigned now, and the values are the ones written
        pending = session.info.setdefault(PENDING_KEY, {})
        for obj in session.info.pop(CHANGED_KEY, []):
            pending[(type(obj).__name__, obj.id)] = obj.to_dict()

    @event.listens_for(session_class, "after_commit")
    def _push(session: Any) -> None:
        from extracted.common.service import emit_model

        for (class_name, _id), model in session.info.pop(PENDING_KEY, {}).items():
            emit_model(class_name, model)

    @event.listens_for(session_class, "after_rollback")
    def _drop(session: Any) -> None:
        session.info.pop(PENDING_KEY, None)
        session.info.pop(CHANGED_KEY, None)
