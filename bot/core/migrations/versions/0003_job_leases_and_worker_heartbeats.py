"""Job leases and worker heartbeats: several workers on one database (issue 11).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Jobs get `owner`, `lease_until`, `next_poll_at`, `fence` and `poked_at` (bot/core/leases.py);
existing rows start unowned with fence 0, so the first worker to start claims them as a
restart would resume them. `workers` holds each process's heartbeat and the 429 slow-down it
shares (bot/core/workers.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("slow_until", sa.Float(), nullable=True),
        sa.Column("slow_factor", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workers_heartbeat_at"), ["heartbeat_at"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("next_poll_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("fence", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("poked_at", sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_next_poll_at"), ["next_poll_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_owner"), ["owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_owner"))
        batch_op.drop_index(batch_op.f("ix_jobs_next_poll_at"))
        batch_op.drop_column("poked_at")
        batch_op.drop_column("fence")
        batch_op.drop_column("next_poll_at")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("owner")

    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workers_heartbeat_at"))

    op.drop_table("workers")
