"""Alembic environment of the messages service's database (``extracted.messages``).

Driven from code with the URL in ``config.attributes["url"]`` (see
``extracted.messages.models.upgrade_schema``), or by the alembic CLI with
``-x url=...`` or ``DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from extracted.messages.models import db

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    url = url or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("DATABASE_URL is not set; set it or pass -x url=... to alembic")
    return url


def _configure(**kwargs) -> None:  # noqa: ANN003 (alembic's own keywords)
    context.configure(target_metadata=db.metadata, **kwargs)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
else:
    engine = create_engine(_url(), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            # SQLite alters tables by copying them (batch mode)
            _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    finally:
        engine.dispose()
