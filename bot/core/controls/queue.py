"""The fair queue: queued jobs are submitted when a slot frees, round-robin between members.

Each queued job carries its member's turn (`queue_round`: how many of that member's jobs
were already waiting when it was queued); the next job is the lowest (round, id) whose
member has a free slot. One member's ten jobs therefore take rounds 0..9 and everyone
else's first job goes between the first and second of them. Everything is in the jobs
table, so the queue survives a restart; the `Dispatcher` looks again whenever a job ends,
a job is queued or cancelled, and every few seconds (another process may have freed a slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from bot.core.controls import ledger
from bot.core.controls.admission import ACTIVE
from bot.core.job import Job, JobState
from bot.core.store import Store, _row_to_job, jobs_table

if TYPE_CHECKING:
    from bot.core.leases import Leases

log = logging.getLogger(__name__)

#: How many queued jobs of one server are looked at per claim (the queue is read in order).
SCAN = 500
#: The dispatcher also looks every this many seconds, in case another process freed a slot.
IDLE_INTERVAL = 5.0
#: Jobs submitted per wake-up at most (each claim is one short transaction).
MAX_BURST = 1000


async def claim_next(store: Store, guild_id: str, leases: Leases | None = None) -> Job | None:
    """Move the next eligible queued job of this server to `created` and return it.

    With `leases` (several workers), the job is leased to this worker in the same statement,
    so no other worker takes the `created` job for one a dead worker left halfway.
    """
    j = jobs_table.c
    async with store.transaction() as conn:
        controls = await ledger.lock(conn, guild_id)
        server_slots = controls.server_limit("server_concurrent")
        active_rows = (
            await conn.execute(
                sa.select(j.requester, sa.func.count())
                .where(j.guild_id == guild_id, j.state.in_(ACTIVE))
                .group_by(j.requester)
            )
        ).all()
        active = {r[0]: int(r[1]) for r in active_rows}
        if server_slots is not None and sum(active.values()) >= server_slots:
            return None
        queued = (
            await conn.execute(
                jobs_table.select()
                .where(
                    j.guild_id == guild_id,
                    j.state == JobState.QUEUED.value,
                    j.held.is_(False),
                )
                .order_by(j.queue_round, j.id)
                .limit(SCAN)
            )
        ).all()
        for row in queued:
            slots = row._mapping["member_slots"]
            member = row._mapping["requester"]
            if slots is not None and active.get(member, 0) >= slots:
                continue
            values: dict[str, object] = {"state": JobState.CREATED.value}
            if leases is not None:
                values.update(owner=leases.worker_id, lease_until=leases.until(), fence=j.fence + 1)
            claimed = await conn.execute(
                jobs_table.update()
                .where(j.id == row._mapping["id"], j.state == JobState.QUEUED.value)
                .values(**values)
                .returning(j.fence)
            )
            fence = claimed.scalar()
            if fence is not None:
                job = _row_to_job(row)
                job.state = JobState.CREATED
                if leases is not None:
                    job.owner, job.fence = leases.worker_id, int(fence)
                    job.lease_until = leases.until()
                    leases.hold(job)
                return job
    return None


async def waiting(store: Store, guild_id: str, limit: int) -> list[Job]:
    """The first `limit` ready jobs of a server's queue, in the fair order, with their places.

    A held job (its front end still preparing it) counts for the places after it but is
    not returned: its status message does not exist yet.
    """
    j = jobs_table.c
    query = (
        jobs_table.select()
        .where(j.guild_id == guild_id, j.state == JobState.QUEUED.value)
        .order_by(j.queue_round, j.id)
        .limit(limit)
    )
    async with store.transaction() as conn:
        rows = (await conn.execute(query)).all()
    jobs = []
    for place, row in enumerate(rows, start=1):
        if row._mapping["held"]:
            continue
        job = _row_to_job(row)
        job.queue_position = place
        jobs.append(job)
    return jobs


async def guilds_with_queue(store: Store) -> list[str]:
    j = jobs_table.c
    query = sa.select(j.guild_id).where(j.state == JobState.QUEUED.value).distinct()
    # Through the write lock: an in-memory SQLite database (the offline demo) is one shared
    # connection, and a plain read closing it would roll back a writer's open transaction.
    async with store.transaction() as conn:
        return [r[0] for r in (await conn.execute(query)).all() if r[0] is not None]


class Dispatcher:
    """Submits queued jobs as slots free; `launch` is the job service's."""

    def __init__(
        self,
        store: Store,
        launch: Callable[[Job], Awaitable[object]],
        *,
        interval: float = IDLE_INTERVAL,
        on_moved: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self.launch = launch
        #: Called (in the background) when a server's queue moved: show the new places.
        self.on_moved = on_moved
        self.interval = interval
        self._wake = asyncio.Event()
        self._open = asyncio.Event()
        self._tasks: set[asyncio.Task[object]] = set()
        self._stopping = False
        #: This worker's leases (several workers): a job it takes from the queue is its own.
        self.leases: Leases | None = None

    def open(self) -> None:
        """Start submitting: called by `JobService.resume`, once the jobs a crash left halfway
        are settled (a claimed job must not be mistaken for one). A process that never
        resumes (the terminal's `generate`) never submits another front end's queued jobs."""
        self._open.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await self._open.wait()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            try:
                await self.dispatch()
            except Exception:
                log.exception("the queue could not dispatch; retrying shortly")

    async def dispatch(self) -> int:
        """Submit every queued job that has a slot now; returns how many."""
        started = 0
        for guild_id in await guilds_with_queue(self.store):
            before = started
            while started < MAX_BURST:
                job = await claim_next(self.store, guild_id, self.leases)
                if job is None:
                    break
                started += 1
                log.info("job %s: its turn in the queue came; submitting", job.id)
                task: asyncio.Task[object] = asyncio.create_task(
                    self._launch(job), name=f"reelbot-queue-{job.id}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if started > before:
                self.moved(guild_id)
        return started

    def moved(self, guild_id: str) -> None:
        """A server's queue moved (a job left it): tell the front end, in the background."""
        if self.on_moved is None or self._stopping:
            return
        task: asyncio.Task[object] = asyncio.create_task(
            self._safely(self.on_moved(guild_id)), name=f"reelbot-queue-moved-{guild_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _safely(coro: Awaitable[object]) -> object:
        try:
            return await coro
        except Exception:
            log.exception("could not show the queue's new places")
            return None

    async def _launch(self, job: Job) -> object:
        try:
            return await self.launch(job)
        except Exception:
            log.exception("job %s: launching from the queue failed", job.id)
            return None

    async def stop(self) -> None:
        self._stopping = True
        self._open.set()
        self._wake.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
