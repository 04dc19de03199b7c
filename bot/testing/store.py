"""An in-memory job store, for driving the poller without a database (tests, the benchmark)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.core.job import Job


class MemoryJobStore:
    """What the poller needs from a store (`update`, `update_many`), kept in the Job objects.

    The poller's bookkeeping is the thing under test or measurement; a database would only add
    its own time and failure modes. `updates` counts writes, so a test can see them batched.
    """

    def __init__(self) -> None:
        self.updates = 0

    async def update(self, job: Job, **fields: Any) -> Job:
        self.updates += 1
        for name, value in fields.items():
            setattr(job, name, value)
        return job

    async def update_many(self, changes: Iterable[tuple[Job, dict[str, Any]]]) -> None:
        for job, fields in changes:
            await self.update(job, **fields)
