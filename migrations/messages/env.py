"""Alembic environment of the messages service's database (``extracted.messages``).

Run from code by ``monolith.db.upgrade_database(url, name="messages")``, or
by the alembic CLI with ``-x url=...`` or ``DATABASE_URL`` set.
"""

from extracted.common.alembic_env import run_environment
from extracted.messages.models import db

run_environment(db.metadata)
