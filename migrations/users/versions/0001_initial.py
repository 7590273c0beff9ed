"""The users service's initial schema: the ``users`` table exactly as in the monolith's database.

Identical names, types, nullability and indexes (``migrations/monolith``'s
0001), so rows can be copied between the two by id.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the users table and its indexes."""
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("nickname", sa.String(32), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("last_seen_at", sa.BigInteger(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_users_nickname", "users", ["nickname"], unique=True)
    op.create_index("ix_users_updated_at", "users", ["updated_at"])


def downgrade() -> None:
    """Drop the users table."""
    op.drop_table("users")
