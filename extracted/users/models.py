"""The users service's table: ``users``, column for column the monolith's.

The service has its own ``SQLAlchemy()`` and session class, so its events
never touch another app's sessions; every committed change of a user is
pushed to Socket.IO clients (``extracted.common.pushes``).
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as _FlaskSession
from sqlalchemy import event, select

from extracted.common.pushes import timestamp, track_pushes
from monolith.models import NICKNAME_MAX, UserColumns, ValidationError
from monolith.models import User as MonolithUser

__all__ = ["NICKNAME_MAX", "User", "UsersSession", "ValidationError", "db"]


class UsersSession(_FlaskSession):
    """The users service's own session class."""


db = SQLAlchemy(session_options={"class_": UsersSession})


class User(UserColumns, db.Model):
    """A chat user; the password is kept only as a werkzeug hash (``user.password = ...``)."""

    __tablename__ = "users"

    # The same columns and behaviour as the monolith's user by construction:
    # its column mixin and methods are borrowed, not copied (they use only the columns both tables share).
    password = MonolithUser.password
    verify_password = MonolithUser.verify_password
    ping = MonolithUser.ping
    to_dict = MonolithUser.to_dict
    from_dict = MonolithUser.from_dict


track_pushes(UsersSession, (User,))


@event.listens_for(UsersSession, "before_flush")
def _first_seen(session: Any, flush_context: Any, instances: Any) -> None:
    for obj in session.new:
        if isinstance(obj, User) and obj.last_seen_at is None:
            obj.last_seen_at = obj.created_at or timestamp()


def mark_inactive_users_offline(now: float | None = None) -> list[int]:
    """Mark users not seen for ``ONLINE_TIMEOUT`` seconds offline (pushed); return their ids.

    Needs an app context.
    """
    now = timestamp() if now is None else now
    cutoff = now - current_app.config["ONLINE_TIMEOUT"]
    stale = db.session.scalars(
        select(User).where(User.online.is_(True), User.last_seen_at < cutoff)
    ).all()
    for user in stale:
        user.online = False
    db.session.commit()
    return [user.id for user in stale]
