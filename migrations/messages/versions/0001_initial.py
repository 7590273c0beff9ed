"""The messages service's schema: the monolith's messages table, without the users table.

Column names, types and index names match ``migrations/monolith`` exactly, so
rows can be copied between the two databases by id. ``user_id`` has no
foreign key: users live in the users service's database.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the messages table and its two indexes."""
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
    )
    op.create_index("ix_messages_updated_at", "messages", ["updated_at"])
    op.create_index("ix_messages_user_id", "messages", ["user_id"])


def downgrade() -> None:
    """Drop the messages table."""
    op.drop_table("messages")
