"""Job ownership by lease in the jobs table: claim, renew, release, all in plain SQL.

Several workers on one PostgreSQL share the jobs table, and the table stays the single truth:
no queue beside it, no coordinator. A job that needs work (running → poll, finished but
undelivered → deliver, created/submitting left behind by a dead worker → settle) is claimed by
one worker with one statement that sets `owner`, `lease_until` and bumps `fence`; on
PostgreSQL the candidate rows are picked `FOR UPDATE SKIP LOCKED`, so two workers claiming at
once never block on, nor take, the same row. The holder renews its leases in batches long
before they run out; every write of a claimed job is conditional on `owner` and `fence`
(`Store.update`), so a worker that lost a lease (paused, partitioned, presumed dead) writes
nothing and drops the job. A worker that dies loses its leases after `LEASE_SECONDS`; one
that stops cleanly releases them at once.

Why not a queue library (PgQueuer and the like): a job here is not a message consumed once
but a row revisited for minutes (poll, poll, …, deliver) whose state the bot reads and
writes anyway; a lease on that row is two columns and three statements, and a second store
of "what is due" would have to be kept consistent with the first.

Time is each worker's clock (epoch seconds, as every other timestamp in the row). Workers
must keep their clocks in sync (NTP): a skew of `s` seconds shortens or lengthens a lease by
`s`. Fencing keeps the data right regardless; skew only risks a job being polled twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from bot.core.clock import Clock
from bot.core.job import TERMINAL, Job, JobState
from bot.core.store import Store, jobs_table, rows_to_jobs

log = logging.getLogger(__name__)

#: Ids per renewal statement (a worker may hold thousands of jobs).
RENEW_CHUNK = 500

_TERMINAL_VALUES = [s.value for s in TERMINAL]


def needs_work() -> sa.ColumnElement[bool]:
    """Jobs some worker must act on: anything not both finished and delivered, except a
    queued job that is ready (the fair queue hands those out: `controls.queue.claim_next`).

    A queued job still `held` by its front end (uploads, status message) is leased to the
    worker preparing it; should that worker die, whoever claims it says it was interrupted.
    """
    c = jobs_table.c
    return sa.and_(
        sa.or_(c.state.not_in(_TERMINAL_VALUES), c.delivered.is_(False)),
        sa.not_(sa.and_(c.state == JobState.QUEUED.value, c.held.is_(False))),
    )


class Leases:
    """One worker's leases: what it holds (`held`: job id → fence) and the statements.

    `exclusive` is true for the one `reelbot run` allowed on a SQLite file (it holds the file
    lock, so every other bot is dead): it may take any job at once except one a live terminal
    process (`reelbot generate`) is leasing.
    """

    def __init__(
        self,
        store: Store,
        worker_id: str,
        clock: Clock,
        lease_seconds: float,
        *,
        exclusive: bool = False,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.exclusive = exclusive
        self.held: dict[int, int] = {}
        #: Counters for metrics and the benchmark.
        self.claimed = 0
        self.takeovers = 0
        self.lost = 0
        self.round_trips = 0
        self._postgres = store.engine.dialect.name == "postgresql"

    # -- bookkeeping ------------------------------------------------------------------------

    def until(self) -> float:
        return self.clock.now() + self.lease_seconds

    def hold(self, job: Job) -> None:
        """Remember a job this worker owns (claimed, or created here with `owner=me`)."""
        if job.owner == self.worker_id:
            self.held[job.id] = job.fence

    def drop(self, job_id: int) -> None:
        self.held.pop(job_id, None)

    def holds(self, job_id: int) -> bool:
        return job_id in self.held

    # -- statements -------------------------------------------------------------------------

    def _claimable(self, now: float, live_terminals: Iterable[str]) -> sa.ColumnElement[bool]:
        c = jobs_table.c
        if self.exclusive:
            # Single process on SQLite: the lock proves every other bot dead; only a live
            # `reelbot generate` keeps its job (a dead one's lease runs out as usual).
            live = list(live_terminals)
            not_live = c.owner.not_in(live) if live else sa.true()
            return sa.or_(c.owner.is_(None), c.lease_until.is_(None), c.lease_until < now, not_live)
        return sa.or_(c.owner.is_(None), c.lease_until.is_(None), c.lease_until < now)

    async def claim(
        self,
        limit: int,
        *,
        horizon: float | None = None,
        live_terminals: Iterable[str] = (),
        orphans_only: bool = False,
    ) -> list[Job]:
        """Take up to `limit` jobs that need work and are free (or whose lease ran out).

        Earliest `next_poll_at` first (never-polled first of all); with `horizon`, only jobs
        due by then; with `orphans_only`, only jobs whose owner's lease ran out (a dead
        worker's). Returned jobs carry the new owner and fence; they are in `held`.
        """
        if limit <= 0:
            return []
        now = self.clock.now()
        c = jobs_table.c
        pick = (
            sa.select(c.id, c.owner.label("previous"))
            .where(needs_work(), self._claimable(now, live_terminals))
            .order_by(c.next_poll_at.asc().nulls_first(), c.id)
            .limit(limit)
        )
        if orphans_only:
            pick = pick.where(c.owner.is_not(None), c.lease_until < now)
        if horizon is not None:
            pick = pick.where(sa.or_(c.next_poll_at.is_(None), c.next_poll_at <= horizon))
        values = {
            "owner": self.worker_id,
            "lease_until": now + self.lease_seconds,
            "fence": c.fence + 1,
        }
        async with self.store.transaction() as conn:
            if self._postgres:
                # One statement: pick the free rows, skipping those another claimer has locked.
                picked = pick.with_for_update(skip_locked=True).cte("picked")
                stmt = (
                    jobs_table.update()
                    .where(c.id == picked.c.id)
                    .values(**values)
                    .returning(*jobs_table.c, picked.c.previous)
                )
                rows = (await conn.execute(stmt)).all()
                previous = {row._mapping["id"]: row._mapping["previous"] for row in rows}
            else:
                # SQLite: writes are serialised (one process, one write transaction at a time)
                # and its RETURNING cannot name a FROM table: pick, then update, in one
                # transaction.
                previous = {r.id: r.previous for r in (await conn.execute(pick)).all()}
                stmt = (
                    jobs_table.update()
                    .where(c.id.in_(list(previous)))
                    .values(**values)
                    .returning(*jobs_table.c)
                )
                rows = (await conn.execute(stmt)).all() if previous else []
        self.round_trips += 1
        jobs = rows_to_jobs(rows)
        for job in jobs:
            self.hold(job)
            if previous.get(job.id) not in (None, self.worker_id):
                self.takeovers += 1
                log.info("job %s: taken over from %s", job.id, previous[job.id])
        self.claimed += len(jobs)
        return jobs

    async def claim_one(self, job_id: int, *, live_terminals: Iterable[str] = ()) -> Job | None:
        """Take one given job if nobody holds it (whatever its state): `reelbot status`
        following a job, a bot following an `unknown` one again. None when it is held."""
        now = self.clock.now()
        c = jobs_table.c
        stmt = (
            jobs_table.update()
            .where(c.id == job_id, self._claimable(now, live_terminals))
            .values(owner=self.worker_id, lease_until=now + self.lease_seconds, fence=c.fence + 1)
            .returning(*jobs_table.c)
        )
        async with self.store.transaction() as conn:
            rows = (await conn.execute(stmt)).all()
        self.round_trips += 1
        jobs = rows_to_jobs(rows)
        for job in jobs:
            self.hold(job)
        return jobs[0] if jobs else None

    async def renew(self) -> list[int]:
        """Extend every held lease; returns the ids whose lease was lost (now dropped)."""
        ids = list(self.held)
        if not ids:
            return []
        until = self.until()
        kept: set[int] = set()
        c = jobs_table.c
        for start in range(0, len(ids), RENEW_CHUNK):
            chunk = sorted(ids[start : start + RENEW_CHUNK])
            # Rows another transaction is writing right now are skipped, not waited for (a
            # renewal stuck behind locks would let every other lease run out meanwhile).
            mine = (
                sa.select(c.id)
                .where(c.owner == self.worker_id, c.id.in_(chunk))
                .order_by(c.id)
                .with_for_update(skip_locked=True)
            )
            stmt = (
                jobs_table.update()
                .where(c.id.in_(mine.scalar_subquery()))
                .values(lease_until=until)
                .returning(c.id, c.fence)
            )
            async with self.store.transaction() as conn:
                rows = (await conn.execute(stmt)).all()
            renewed = {r.id for r in rows if self.held.get(r.id) == r.fence}
            skipped = [i for i in chunk if i not in renewed]
            if skipped:
                # Busy a moment ago (a write of ours, a claim looking at them), or lost: a
                # second pass waits for those few rows (locked in id order), so a row that
                # is often busy is still renewed rather than left to run out.
                waiting = (
                    sa.select(c.id)
                    .where(c.owner == self.worker_id, c.id.in_(skipped))
                    .order_by(c.id)
                    .with_for_update()
                )
                again = (
                    jobs_table.update()
                    .where(c.id.in_(waiting.scalar_subquery()))
                    .values(lease_until=until)
                    .returning(c.id, c.fence)
                )
                async with self.store.transaction() as conn:
                    rows = (await conn.execute(again)).all()
                renewed |= {r.id for r in rows if self.held.get(r.id) == r.fence}
                self.round_trips += 1
            self.round_trips += 1
            kept.update(renewed)
        lost = [i for i in ids if i not in kept and i in self.held]
        for job_id in lost:
            self.drop(job_id)
        if lost:
            self.lost += len(lost)
            log.warning("lost the lease of %d job(s): %s", len(lost), lost[:20])
        return lost

    async def confirm(self, job: Job) -> bool:
        """Renew one lease right before an act that must not be done twice (a delivery)."""
        c = jobs_table.c
        stmt = (
            jobs_table.update()
            .where(c.id == job.id, c.owner == self.worker_id, c.fence == job.fence)
            .values(lease_until=self.until())
        )
        async with self.store.transaction() as conn:
            result = await conn.execute(stmt)
        self.round_trips += 1
        if result.rowcount == 0:
            self.drop(job.id)
            self.lost += 1
            return False
        return True

    async def release(self, releases: Iterable[tuple[Job, float | None]]) -> int:
        """Give jobs back (clean stop, shedding load), each with when it is next due."""
        count = 0
        c = jobs_table.c
        items = sorted(releases, key=lambda item: item[0].id)
        if not items:
            return 0
        async with self.store.transaction() as conn:
            for job, due in items:
                values: dict[str, Any] = {"owner": None, "lease_until": None}
                if due is not None:
                    values["next_poll_at"] = due
                result = await conn.execute(
                    jobs_table.update()
                    .where(c.id == job.id, c.owner == self.worker_id, c.fence == job.fence)
                    .values(**values)
                )
                count += result.rowcount
        self.round_trips += 1
        for job, _ in items:
            self.drop(job.id)
            job.owner = None
        return count

    async def poked(self) -> list[str]:
        """Task ids of held jobs that a webhook reaching another worker marked due now."""
        c = jobs_table.c
        poked = (
            sa.select(c.id)
            .where(c.owner == self.worker_id, c.poked_at.is_not(None))
            .order_by(c.id)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            jobs_table.update()
            .where(c.id.in_(poked.scalar_subquery()))
            .values(poked_at=None)
            .returning(c.task_id)
        )
        async with self.store.transaction() as conn:
            rows = (await conn.execute(stmt)).all()
        self.round_trips += 1
        return [r.task_id for r in rows if r.task_id]

    async def mark_due(self, task_id: str) -> bool:
        """A webhook for a task this worker does not follow: due now, for whoever holds it."""
        c = jobs_table.c
        now = self.clock.now()
        stmt = (
            jobs_table.update()
            .where(c.task_id == task_id, c.state == JobState.RUNNING.value)
            .values(next_poll_at=now, poked_at=now)
        )
        async with self.store.transaction() as conn:
            result = await conn.execute(stmt)
        self.round_trips += 1
        return bool(result.rowcount)

    async def open_count(self) -> int:
        """How many jobs need work across all workers (for each worker's fair share)."""
        query = sa.select(sa.func.count()).select_from(jobs_table).where(needs_work())
        async with self.store.engine.connect() as conn:
            count = int((await conn.execute(query)).scalar_one())
        self.round_trips += 1
        return count
