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
)
