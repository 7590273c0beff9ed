"""The messages service's table: the monolith's ``messages``, in a database of its own.

The model reuses the monolith's ``to_dict`` and ``from_dict`` (the JSON and
the validation are the contract, so they are the same functions, not
copies). ``user_id`` is a plain integer: users live in the users service.
Every committed change is pushed to Socket.IO clients by :func:`save`.
"""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer
from sqlalchemy.orm import Mapped, mapped_column

from monolith import models as flack

db = SQLAlchemy()


class Message(flack.MessageColumns, db.Model):
    """A chat message: its markdown source, the sanitised HTML shown and its author's id."""

    __tablename__ = "messages"

    user_id: Mapped[int] = mapped_column(Integer, index=True, sort_order=1)  # last, as in the table

    to_dict = flack.Message.to_dict
    from_dict = flack.Message.from_dict


def save(message: Message) -> dict:
    """Stamp *message*'s times, commit it and push it to every client; return its dict.

    Callers save only real changes, so ``updated_at`` moves exactly when the
    monolith's would. The push goes out after the commit, never for a
    rolled-back change.
    """
    from extracted.common.service import emit_model

    now = flack.timestamp()
    message.created_at = message.created_at or now
    message.updated_at = now
    db.session.add(message)
    db.session.commit()
    model = message.to_dict()
    emit_model("Message", model)
    return model
