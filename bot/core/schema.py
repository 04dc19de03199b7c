"""The tables, as the code expects them today: the one place a new table or column is declared.

Declaring is half of a schema change; the other half is a revision in
`bot/core/migrations/versions/` that brings an existing database to the same shape
(`reelbot db revision -m "..."` writes one from the difference). A test compares the two, so
a column added here without its revision fails CI instead of the first operator's upgrade.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

jobs_table = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("request", sa.JSON, nullable=False),
    sa.Column("origin", sa.JSON, nullable=False),
    sa.Column("requester", sa.String(64), index=True),
    sa.Column("guild_id", sa.String(64), index=True),
    sa.Column("task_id", sa.String(128), index=True),
    sa.Column("progress", sa.Integer, nullable=False, default=0),
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
    sa.Column("delivered", sa.Boolean, nullable=False, default=False, index=True),
    # Leases (bot/core/leases.py): which worker holds the job, until when, when it is next due
    # for a poll, and the fencing token bumped at every claim.
    sa.Column("owner", sa.String(64), index=True),
    sa.Column("lease_until", sa.Float),
    sa.Column("next_poll_at", sa.Float, index=True),
    sa.Column("fence", sa.Integer, nullable=False, default=0, server_default="0"),
    # A webhook reached a worker that does not hold the job: its owner polls it at once.
    sa.Column("poked_at", sa.Float),
)

#: One row per live process (bot/core/workers.py): its heartbeat, and the API slow-down it last
#: saw (a 429), which every other worker reads so that one 429 slows them all.
workers_table = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False, index=True),
    sa.Column("slow_until", sa.Float),
    sa.Column("slow_factor", sa.Float),
)

#: Lease bookkeeping is written by `bot.core.leases` only, never through `Store.update`.
LEASE_COLUMNS = frozenset({"owner", "lease_until", "next_poll_at", "fence", "poked_at"})
