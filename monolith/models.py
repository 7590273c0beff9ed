"""Flack's tables: users, messages and revoked tokens.

Every committed change of a user or a message is pushed to all Socket.IO
clients as ``updated_model``. The dicts are taken right after each flush
(when ids and values are final) and sent only once the commit succeeded, so
clients never hear of a change that was rolled back.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from flask import current_app
from sqlalchemy import BigInteger, Boolean, Double, ForeignKey, Integer, String, Text, event
from sqlalchemy.orm import Mapped, Session, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from monolith import MonolithSession, db, socketio

NICKNAME_MAX = 32
# a message's source, in characters: rendering one of this size, however
# hostile, stays within 100 ms (bench/render_worst.py); a chat line needs less
SOURCE_MAX = 4096
PENDING_KEY = "monolith_pending_pushes"
FLUSHED_KEY = "monolith_flushed_models"
logger = logging.getLogger(__name__)


# A lone UTF-16 surrogate cannot be encoded for any database (or as UTF-8),
# and PostgreSQL refuses NUL in text: a JSON string may hold either.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class ValidationError(ValueError):
    """Client data that cannot be stored; the message says what is wrong."""


def text_problem(value: Any) -> str | None:
    """PURE: why the JSON *value* holds text no database stores, or None if it does not.

    Looks at every string in it (object keys too), without recursion: a
    value nested as deep as the JSON parser allows must not overflow here.
    The answer reads after a subject: ``"nickname " + problem``.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if match := _UNSTORABLE.search(item):
                char = match.group()
                if char == "\x00":
                    return "contains a NUL character (\\u0000); remove it"
                return (f"contains an unpaired UTF-16 surrogate (\\u{ord(char):04x});"
                        " send valid Unicode text")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def timestamp() -> int:
    """Return the current time as integer epoch seconds."""
    return int(time.time())


def _string(data: Mapping[str, Any], name: str, max_length: int | None = None) -> str:
    value = data.get(name)
    if value is None:
        raise ValidationError(f"{name} is required")
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string")
    if not value.strip():
        raise ValidationError(f"{name} must not be empty")
    if problem := text_problem(value):
        raise ValidationError(f"{name} {problem}")
    if max_length is not None and len(value) > max_length:
        raise ValidationError(f"{name} must be at most {max_length} characters")
    return value


class UserColumns:
    """The ``users`` table's columns, for the monolith's model and the users service's."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger, index=True)
    nickname: Mapped[str] = mapped_column(String(NICKNAME_MAX), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    last_seen_at: Mapped[int] = mapped_column(BigInteger)
    online: Mapped[bool] = mapped_column(Boolean, default=False)


class User(UserColumns, db.Model):
    """A chat user; the password is kept only as a werkzeug hash."""

    __tablename__ = "users"

    @property
    def password(self) -> str:
        """Passwords are write-only."""
        raise AttributeError("password is not readable")

    @password.setter
    def password(self, value: str) -> None:
        method = current_app.config.get("PASSWORD_HASH_METHOD", "scrypt")
        self.password_hash = generate_password_hash(value, method=method)

    def verify_password(self, password: str) -> bool:
        """Tell whether *password* is this user's password."""
        return check_password_hash(self.password_hash, password)

    def needs_ping(self, now: int | None = None) -> bool:
        """Tell whether :meth:`ping` at *now* would change anything."""
        now = timestamp() if now is None else now
        return self.last_seen_at != now or not self.online

    def ping(self, now: int | None = None) -> None:
        """Mark the user online and seen now (writes only what changed)."""
        now = timestamp() if now is None else now
        if self.last_seen_at != now:
            self.last_seen_at = now
        if not self.online:
            self.online = True

    def to_dict(self) -> dict[str, Any]:
        """Return the public representation (never the password hash)."""
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
        """Set nickname and password from client *data*; raise :class:`ValidationError`.

        With *partial*, absent fields are left alone (an edit); otherwise both
        are required (a registration).
        """
        nickname = None
        if not partial or "nickname" in data:
            nickname = _string(data, "nickname", NICKNAME_MAX).strip()
        if not partial or "password" in data:
            self.password = _string(data, "password")
        # compared after the (slow) hash, since reading it may open a transaction;
        # an equal value is no change to bump or push
        if nickname is not None and self.nickname != nickname:
            self.nickname = nickname


class MessageColumns:
    """The ``messages`` table's columns but ``user_id`` (a foreign key only in the monolith)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger, index=True)
    source: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)


def message_dict(message: Any) -> dict[str, Any]:
    """The public representation of a message: an ORM object or a plain row of its columns."""
    return {
        "id": message.id,
        "created_at": message.created_at,
        "updated_at": message.updated_at,
        "source": message.source,
        "html": message.html,
        "user_id": message.user_id,
        "_links": {"self": f"/api/messages/{message.id}", "user": f"/api/users/{message.user_id}"},
    }


class Message(MessageColumns, db.Model):
    """A chat message: its markdown source and the sanitised HTML shown."""

    __tablename__ = "messages"

    # after the mixin's columns, where the table (and its migration) has it
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True, sort_order=1)

    def to_dict(self) -> dict[str, Any]:
        """Return the public representation."""
        return message_dict(self)

    def from_dict(self, data: Mapping[str, Any]) -> None:
        """Set the source from client *data*; raise :class:`ValidationError`."""
        source = _string(data, "source", SOURCE_MAX)
        if self.source != source:  # an equal value is no change to bump or push
            self.source = source


class RevokedToken(db.Model):
    """A revoked token id, or ``user:<id>`` for "every token of the user up to revoked_at"."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Double, not Float: MariaDB's FLOAT is single precision and would lose seconds
    expires_at: Mapped[float] = mapped_column(Double, index=True)
    revoked_at: Mapped[float | None] = mapped_column(Double, nullable=True)


PUSHED_MODELS = (User, Message)


@event.listens_for(MonolithSession, "before_flush")
def _stamp_times(session: Session, flush_context: Any, instances: Any) -> None:
    now = timestamp()
    for obj in session.new:
        if isinstance(obj, PUSHED_MODELS):
            obj.created_at = obj.created_at or now
            obj.updated_at = now
            if isinstance(obj, User) and obj.last_seen_at is None:
                obj.last_seen_at = now
    for obj in session.dirty:
        if isinstance(obj, PUSHED_MODELS) and session.is_modified(obj, include_collections=False):
            obj.updated_at = now


@event.listens_for(MonolithSession, "after_flush")
def _note_flushed(session: Session, flush_context: Any) -> None:
    # new/dirty and attribute history still show the pre-flush state here
    flushed = session.info.setdefault(FLUSHED_KEY, [])
    for obj in [*session.new, *session.dirty]:
        if isinstance(obj, PUSHED_MODELS) and (
            obj in session.new or session.is_modified(obj, include_collections=False)
        ):
            flushed.append(obj)


@event.listens_for(MonolithSession, "after_flush_postexec")
def _collect_pushes(session: Session, flush_context: Any) -> None:
    # ids are assigned now, and the values are the ones written
    pending = session.info.setdefault(PENDING_KEY, {})
    for obj in session.info.pop(FLUSHED_KEY, []):
        pending[(type(obj).__name__, obj.id)] = obj.to_dict()


@event.listens_for(MonolithSession, "after_commit")
def _send_pushes(session: Session) -> None:
    pending = session.info.pop(PENDING_KEY, {})
    if not pending or socketio.server is None:
        return
    for (class_name, _id), model in pending.items():
        try:
            socketio.emit("updated_model", {"class": class_name, "model": model})
        except Exception:  # the commit stands; a lost push must not fail the request
            logger.exception("could not push updated_model for %s %s", class_name, _id)


@event.listens_for(MonolithSession, "after_rollback")
def _drop_pushes(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)
    session.info.pop(FLUSHED_KEY, None)
