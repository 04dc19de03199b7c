"""A store that fails on cue, for the fault tests: a locked SQLite file, a full disk, a
PostgreSQL restart, as `sqlalchemy.exc.OperationalError` — what the real drivers raise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import OperationalError

from bot.core.job import Job
from bot.core.store import Store

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
