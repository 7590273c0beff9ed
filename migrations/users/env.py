"""Alembic environment of the users service's database (``monolith.db.upgrade_database(url, name="users")``)."""

from extracted.common.alembic_env import run_environment
from extracted.users.models import db

run_environment(db.metadata)
