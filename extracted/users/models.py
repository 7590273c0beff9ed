"""The users service's table: ``users``, column for column the monolith's.

The service has its own ``SQLAlchemy()`` and session class, so its events
never touch another app's sessions; every committed change of a user is
pushed to Socket.IO clients (``extracted.common.pushes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session as _FlaskSession
from sqlalchemy import BigInteger, Boolean, Integer, String, event, select
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from extracted.common.pushes import timestamp, track_pushes
from monolith.models import NICKNAME_MAX, ValidationError, _string

__all__ = ["NICKNAME_MAX", "User", "UsersSession", "ValidationError", "db"]


class UsersSession(_FlaskSession):
    """The users service's own session class."""


db = SQLAlchemy(session_options={"class_": UsersSession})


class User(db.Model):
    """A chat user; the password is kept only as a werkzeug hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger, index=True)
    nickname: Mapped[str] = mapped_column(String(NICKNAME_MAX), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    last_seen_at: Mapped[int] = mapped_column(BigInteger)
    online: Mapped[bool] = mapped_column(Boolean, default=False)

    def set_password(self, password: str) -> None:
        """Store a hash of *password* (the method comes from ``PASSWORD_HASH_METHOD``)."""
        method = current_app.config.get("PASSWORD_HASH_METHOD", "scrypt")
        self.password_hash = generate_password_hash(password, method=method)

    def verify_password(self, password: str) -> bool:
        """Tell whether *password* is this user's password."""
        return check_password_hash(self.password_hash, password)

    def ping(self, now: int | None = None) -> None:
        """Mark the user online and seen now (writes only what changed)."""
        now = timestamp() if now is None else now
        if self.last_seen_at != now:
            self.last_seen_at = now
        if not self.online:
            self.online = True

    def to_dict(self) -> dict[str, Any]:
        """Return the public representation (never the password hash), as the monolith does."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "nickname": self.nickname,
            "last_seen_at": self.last_seen_at,
            "online": bool(self.online),
            "_links": {
                "self": f"/api/users/{self.id}",
                "messages": f"/api/messages?user_id={self.id}",
                "tokens": "/api/tokens",
            },
        }

    def from_dict(self, data: Mapping[str, Any], partial: bool = False) -> None:
        """Set nickname and password from client *data*; raise ``ValidationError``.

        With *partial*, absent fields are left alone (an edit); otherwise both
        are required (a registration).
        """
        nickname = None
        if not partial or "nickname" in data:
            nickname = _string(data, "nickname", NICKNAME_MAX).strip()
        if not partial or "password" in data:
            self.set_password(_string(data, "password"))
        if nickname is not None and self.nickname != nickname:  # no change, no bump
            self.nickname = nickname


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
