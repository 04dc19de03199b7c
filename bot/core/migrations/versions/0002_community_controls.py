"""Community controls: money and queue columns on jobs; settings, usage, prices, audit tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Money is integer micro-dollars (BigInteger): exact on SQLite too. Existing jobs get
`usage_day` NULL: they were never reserved, so the ledger leaves them alone when they end
(their spend is not in the per-day usage rows), and `settled` false. The new NOT NULL columns
carry server defaults so `ADD COLUMN` works on a table with rows (SQLite and PostgreSQL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guild_controls",
        sa.Column("guild_id", sa.String(64), primary_key=True),
        sa.Column("doc", sa.JSON, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("guild_id", sa.String(64), primary_key=True),
        sa.Column("member_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("jobs", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("spent_micros", sa.BigInteger, nullable=False),
        sa.Column("reserved_micros", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "prices",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("resolution", sa.String(16), primary_key=True),
        sa.Column("micros_per_unit", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("observations", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.String(64), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("setting", sa.String(200), nullable=False),
        sa.Column("old", sa.Text),
        sa.Column("new", sa.Text),
    )
    op.create_index("ix_audit_log_guild_id", "audit_log", ["guild_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("estimate_micros", sa.BigInteger))
        batch.add_column(
            sa.Column("reserved_micros", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("usage_day", sa.String(10)))
        batch.add_column(
            sa.Column("settled", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("queue_round", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("member_slots", sa.Integer))
        batch.add_column(sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in (
            "held",
            "member_slots",
            "queue_round",
            "settled",
            "usage_day",
            "reserved_micros",
            "estimate_micros",
        ):
            batch.drop_column(column)
    op.drop_index("ix_audit_log_guild_id", table_name="audit_log")
    for table in ("audit_log", "prices", "usage_daily", "guild_controls"):
        op.drop_table(table)
