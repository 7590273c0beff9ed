"""Alembic environment of the monolith's database.

Run from code by ``monolith.db.upgrade_database`` (the URL comes in
``config.attributes["url"]``), or by the alembic CLI with ``-x url=...`` or
``DATABASE_URL`` set.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from monolith import (
    db,
    models,  # noqa: F401  (registers the tables on db.metadata)
)

config = context.config
target_metadata = db.metadata


def database_url() -> str:
    """Return the URL to migrate, from the caller, ``-x url=`` or ``DATABASE_URL``."""
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise RuntimeError("DATABASE_URL is not set; set it or pass -x url=... to alembic")
    return url


def run_migrations_offline() -> None:
    """Write the SQL for the upgrade instead of running it."""
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the upgrade against a live connection (given, or opened from the URL)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(database_url(), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
