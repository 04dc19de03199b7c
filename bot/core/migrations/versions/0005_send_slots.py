"""Shared send windows: one Discord channel budget across workers (issue 11).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

`send_slots` holds, per key (a Discord channel id), one row per request the window allows,
with the time it was last taken (bot/core/send_window.py). A new, empty table: rows are
created on first use and pruned when an hour old.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_slots",
        sa.Column("key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", "slot"),
    )
    with op.batch_alter_table("send_slots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_send_slots_sent_at"), ["sent_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("send_slots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_send_slots_sent_at"))
    op.drop_table("send_slots")
