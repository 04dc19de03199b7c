"""Pruning: finished, delivered jobs older than JOB_RETENTION_DAYS leave the jobs table.

A job row is about 0.8 KB and the table grew for ever. Caps and usage read the per-day
aggregates (`usage_daily`), never the jobs, so pruning changes no report. Deletes go in
small batches (one short transaction each), so a bot with millions of old rows never holds
the database lock for long; the background loop runs a bounded number of batches per pass.
The same pass drops interaction claims and shared send-window slots an hour old
(bot/core/interaction_claims.py, bot/core/send_window.py).
"""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa

from bot.core import interaction_claims, send_window
from bot.core.clock import Clock
from bot.core.controls.limits import LIMITS
from bot.core.job import TERMINAL, JobState
from bot.core.store import Store, jobs_table

log = logging.getLogger(__name__)

BATCH = 500
MAX_BATCHES = 200
#: How often the background pass runs (seconds).
EVERY = 3600.0


#: The cooldown is read from a member's last job, so no job younger than the longest
#: cooldown is pruned, whatever JOB_RETENTION_DAYS says (it may be 1; a cooldown, 7 days).
KEEP_AT_LEAST = float(LIMITS["member_cooldown_seconds"].maximum)


def cutoff(now: float, *, days: int) -> float:
    """Jobs that finished before this are pruned: `days` ago, but never within a cooldown."""
    return min(now - days * 86400.0, now - KEEP_AT_LEAST)


async def prune(
    store: Store, *, older_than: float, batch: int = BATCH, max_batches: int = MAX_BATCHES
) -> int:
    """Delete settled, delivered, finished jobs that ended before `older_than`; returns count.

    `unknown` jobs stay (their money is still reserved until someone resolves them).
    """
    j = jobs_table.c
    final = [s.value for s in TERMINAL if s is not JobState.UNKNOWN]
    removed = 0
    for _ in range(max_batches):
        ids_query = (
            sa.select(j.id)
            .where(
                j.state.in_(final),
                j.delivered.is_(True),
                j.finished_at.is_not(None),
                j.finished_at < older_than,
                sa.or_(j.settled.is_(True), j.usage_day.is_(None)),
            )
            .order_by(j.id)
            .limit(batch)
        )
        async with store.transaction() as conn:
            ids = [r[0] for r in (await conn.execute(ids_query)).all()]
            if not ids:
                break
            await conn.execute(jobs_table.delete().where(j.id.in_(ids)))
        removed += len(ids)
        await asyncio.sleep(0)  # let other writers in between batches
    if removed:
        log.info("retention: pruned %d finished jobs", removed)
    return removed


async def prune_forever(store: Store, clock: Clock, days: int, every: float = EVERY) -> None:
    """The background pass: prune old jobs, interaction claims and send slots, then wait;
    errors are logged and retried next pass."""
    while True:
        try:
            now = clock.now()
            await prune(store, older_than=cutoff(now, days=days))
            await interaction_claims.prune(store, older_than=now - interaction_claims.KEEP_SECONDS)
            await send_window.prune(store, older_than=now - send_window.KEEP_SECONDS)
        except Exception:
            log.exception("retention: pruning failed; will retry")
        await asyncio.sleep(every)
