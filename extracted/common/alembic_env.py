"""The body of a service's alembic ``env.py``: ``run_environment(db.metadata)``.

Run from code by ``monolith.db.upgrade_database(url, name=<service>)`` (the
URL comes in ``config.attributes["url"]``), or by the alembic CLI with
``-x url=...`` or ``DATABASE_URL`` set.
"""

from __future__ import annotations

import os

from sqlalchemy import MetaData, create_engine
from sqlalchemy.pool import NullPool


def run_environment(target_metadata: MetaData) -> None:
    """Run the migrations alembic asked for (online or offline) against *target_metadata*."""
    from alembic import context

    config = context.config
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise RuntimeError("DATABASE_URL is not set; set it or pass -x url=... to alembic")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
