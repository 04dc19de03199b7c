"""The controls' tables, on the store's `metadata` (created with the jobs table).

Money columns are BigInteger micro-dollars: exact on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import sqlalchemy as sa

from bot.core.store import metadata

#: The key of the row that carries operator-wide caps (all servers together).
OPERATOR = "*"
#: The guild key of jobs that come from no server (the terminal's `generate`).
NO_GUILD = ""

#: One row per server: its settings as one JSON document, and `seq`, which every admission
#: and every change bumps first. That UPDATE is the lock: a row lock on PostgreSQL (held to
#: commit), the database write lock on SQLite, so admissions to one server run one at a time.
guild_controls = sa.Table(
    "guild_controls",
    metadata,
    sa.Column("guild_id", sa.String(64), primary_key=True),
    sa.Column("doc", sa.JSON, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False, default=0),
)

#: Per UTC day, server, member and model: what caps and reports read. Kept when old jobs are
#: pruned, so spend and usage stay exact for ever.
usage_daily = sa.Table(
    "usage_daily",
    metadata,
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("guild_id", sa.String(64), primary_key=True),
    sa.Column("member_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("jobs", sa.Integer, nullable=False, default=0),
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("spent_micros", sa.BigInteger, nullable=False, default=0),
    sa.Column("reserved_micros", sa.BigInteger, nullable=False, default=0),
)

#: Price per second of video (times samples, for Veo) by model and resolution.
prices = sa.Table(
    "prices",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("resolution", sa.String(16), primary_key=True),
    sa.Column("micros_per_unit", sa.BigInteger, nullable=False),
    #: `seed` (PRICES_FILE) or `learned` (a finished job's reported cost).
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("observations", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", sa.Float, nullable=False),
)

#: Every change an admin made: who, when, what, old → new.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("guild_id", sa.String(64), nullable=False, index=True),
    sa.Column("actor_id", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("setting", sa.String(200), nullable=False),
    sa.Column("old", sa.Text),
    sa.Column("new", sa.Text),
)
