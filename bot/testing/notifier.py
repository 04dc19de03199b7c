"""A notifier that remembers what it was told, for tests and the benchmark."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

from bot.core.clock import Clock
from bot.core.job import Job


class RecordingNotifier:
    """Records every progress event and every finished job; lets a test wait for one.

    With a `clock`, `finished_at` holds when each job was reported finished (the benchmark's
    delivery delay). `keep_progress=False` counts progress events without keeping them, so
    a run of thousands of jobs does not measure this list's memory.
    """

    def __init__(self, *, clock: Clock | None = None, keep_progress: bool = True) -> None:
        self.progress: list[tuple[int, int]] = []
        #: Every progress event's notice ("delayed", "slow" or None), in order.
        self.notices: list[tuple[int, str | None]] = []
        self.progress_events = 0
        self.finished: list[Job] = []
        self.finished_at: list[float] = []
        self.fail_deliveries = 0
        self._clock = clock
        self._keep_progress = keep_progress
        self._waiters: dict[int, list[asyncio.Future[Job]]] = defaultdict(list)
        self._count_waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def job_progress(self, job: Job) -> None:
        self.progress_events += 1
        if self._keep_progress:
            self.progress.append((job.id, job.progress))
            self.notices.append((job.id, job.notice))

    async def job_finished(self, job: Job) -> None:
        if self.fail_deliveries:
            self.fail_deliveries -= 1
            raise RuntimeError("delivery refused (test)")
        self.finished.append(job)
        if self._clock is not None:
            self.finished_at.append(self._clock.now())
        for future in self._waiters.pop(job.id, []):
            if not future.done():
                future.set_result(job)
        for count, waiter in self._count_waiters:
            if len(self.finished) >= count and not waiter.done():
                waiter.set_result(None)

    def finished_ids(self) -> list[int]:
        return [job.id for job in self.finished]

    def states(self) -> Counter[str]:
        """How many finished jobs ended in each state."""
        return Counter(job.state.value for job in self.finished)

    async def wait_finished(self, job_id: int, timeout: float = 10.0) -> Job:
        for job in self.finished:
            if job.id == job_id:
                return job
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._waiters[job_id].append(future)
        async with asyncio.timeout(timeout):
            return await future

    async def wait_count(self, count: int, timeout: float) -> None:
        """Wait until `count` jobs have finished (TimeoutError after `timeout` seconds)."""
        if len(self.finished) >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count_waiters.append((count, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        finally:
            self._count_waiters.remove((count, future))
