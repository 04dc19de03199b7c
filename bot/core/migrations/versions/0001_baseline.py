"""Baseline: the jobs table as every reelbot before migrations created it.

Revision ID: 0001
Revises:
Create Date: 2026-11-30

A database made by `create_all` (a `jobs` table, no `alembic_version`) is stamped at this
revision instead of running it, so this must stay exactly that schema: change the schema in a
new revision, never here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

INDEXED = ("state", "requester", "guild_id", "task_id", "delivered")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("origin", sa.JSON, nullable=False),
        sa.Column("requester", sa.String(64)),
        sa.Column("guild_id", sa.String(64)),
        sa.Column("task_id", sa.String(128)),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("estimated_time", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("submitted_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sa.Column("run_seconds", sa.Float),
        sa.Column("cost", sa.Float),
        sa.Column("credits_cost", sa.Float),
        sa.Column("video_urls", sa.JSON, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("delivered", sa.Boolean, nullable=False),
    )
    for column in INDEXED:
        op.create_index(f"ix_jobs_{column}", "jobs", [column])


def downgrade() -> None:
    for column in INDEXED:
        op.drop_index(f"ix_jobs_{column}", table_name="jobs")
    op.drop_table("jobs")
