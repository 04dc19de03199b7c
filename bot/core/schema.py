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
    # Community controls (bot.core.controls): money in integer micro-dollars, never float.
    #: The admission's estimate (None: no price known yet for this model and resolution).
    sa.Column("estimate_micros", sa.BigInteger),
    #: What the usage ledger holds against caps for this job until it is settled.
    sa.Column("reserved_micros", sa.BigInteger, nullable=False, default=0, server_default="0"),
    #: The UTC day (YYYY-MM-DD) whose usage row carries this job's jobs, spend and failures
    #: (None: a job from before the controls, never reserved).
    sa.Column("usage_day", sa.String(10)),
    #: The reservation has become the actual cost (once, whatever retries the end sees).
    sa.Column("settled", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    #: Queued jobs: the member's turn (round-robin key) and their concurrent-job allowance.
    sa.Column("queue_round", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("member_slots", sa.Integer),
    #: A queued job the front end is still preparing (uploads, status message): not yet sent.
    sa.Column("held", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
)

# -- community controls (bot.core.controls) -------------------------------------------------

#: One row per server (and one, `*`, for the operator's caps): its settings as one JSON
#: document, and `seq`, which every admission and every change bumps first. That UPDATE is the
#: lock: a row lock on PostgreSQL (held to commit), the database write lock on SQLite, so
#: admissions to one server run one at a time.
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

#: Which worker took each Discord interaction (bot/core/interaction_claims.py). Every replica
#: of an unsharded bot receives every interaction; the one whose INSERT lands answers it.
#: Rows are kept an hour (an interaction's token lives 15 minutes), then pruned.
interaction_claims = sa.Table(
    "interaction_claims",
    metadata,
    sa.Column("interaction_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("worker", sa.String(64), nullable=False),
    sa.Column("claimed_at", sa.Float, nullable=False, index=True),
)

#: Shared send windows (bot/core/send_window.py): `limit` slot rows per key (a Discord
#: channel), each holding the time it was last taken. A slot is taken only once its time is a
#: whole window old, so no window ever holds more than `limit` sends, whichever worker sent.
send_slots = sa.Table(
    "send_slots",
    metadata,
    sa.Column("key", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sent_at", sa.Float, nullable=False, index=True),
)

#: Lease bookkeeping is written by `bot.core.leases` only, never through `Store.update`.
LEASE_COLUMNS = frozenset({"owner", "lease_until", "next_poll_at", "fence", "poked_at"})
