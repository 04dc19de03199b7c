"""A notifier that remembers what it was told, for tests and the benchmark."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from bot.core.job import Job


class RecordingNotifier:
    """Records every progress event and every finished job; lets a test wait for one."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, int]] = []
        #: Every progress event's notice ("delayed", "slow" or None), in order.
        self.notices: list[tuple[int, str | None]] = []
        self.finished: list[Job] = []
        self.fail_deliveries = 0
        self._waiters: dict[int, list[asyncio.Future[Job]]] = defaultdict(list)

    async def job_progress(self, job: Job) -> None:
        self.progress.append((job.id, job.progress))
        self.notices.append((job.id, job.notice))

    async def job_finished(self, job: Job) -> None:
        if self.fail_deliveries:
            self.fail_deliveries -= 1
            raise RuntimeError("delivery refused (test)")
        self.finished.append(job)
        for future in self._waiters.pop(job.id, []):
            if not future.done():
                future.set_result(job)

    def finished_ids(self) -> list[int]:
        return [job.id for job in self.finished]

    async def wait_finished(self, job_id: int, timeout: float = 10.0) -> Job:
        for job in self.finished:
            if job.id == job_id:
                return job
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._waiters[job_id].append(future)
        async with asyncio.timeout(timeout):
            return await future
