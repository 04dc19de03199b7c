"""Stores for tests and the benchmark: one in memory (no database), one that fails on cue.

`MemoryJobStore` drives the poller without a database. `FlakyStore` is the real store whose
writes fail when told to: a locked SQLite file, a full disk, a PostgreSQL restart, raised as
`sqlalchemy.exc.OperationalError` - what the real drivers raise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.exc import OperationalError

from bot.core.job import Job
from bot.core.store import Store


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


#: Decides from a job and the fields being written whether this write fails.
FailWhen = Callable[[Job, dict[str, Any]], bool]


class FlakyStore(Store):
    """`Store` whose `update` raises OperationalError whenever `fail_when` says so."""

    fail_when: FailWhen = staticmethod(lambda job, fields: False)  # type: ignore[assignment]
    failures: int = 0

    async def update(self, job: Job, **fields: Any) -> Job:
        if self.fail_when(job, fields):
            self.failures += 1
            raise OperationalError("UPDATE jobs SET ...", {}, Exception("database is locked"))
        return await super().update(job, **fields)
