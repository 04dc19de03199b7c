"""Interaction claims: one replica answers each Discord interaction (issue 11).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Every unsharded replica (and both sides of a rolling deploy) receives every INTERACTION_CREATE;
`interaction_claims` records which worker took each one (bot/core/interaction_claims.py). A
new, empty table: nothing to backfill.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "interaction_claims",
        sa.Column("interaction_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("worker", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("interaction_id"),
    )
    with op.batch_alter_table("interaction_claims", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_interaction_claims_claimed_at"), ["claimed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("interaction_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interaction_claims_claimed_at"))
    op.drop_table("interaction_claims")
