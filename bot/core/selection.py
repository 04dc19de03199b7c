"""Which due poll gets the next request token: value first, due time second.

The poller keeps two queues. Its timer heap orders jobs by *due time* (when a poll would
help). Once a job is due it moves here, ordered by its *priority key* (how much the poll is
worth, `Schedule.priority`: seconds, lower first). A request token is spent only when one is
there (`RateLimiter.reserve`), and then on the best key in line — so while the budget has room
every due poll goes out at once, in due order as before, and when it binds the polls that buy
the most (a new job's first look, early failure checks, jobs near their end, webhook hints) go
ahead of sparse check-ins, which are stretched up to `POLL_MAX_INTERVAL` rather than dropped.

Late binding is the point: with tokens taken inside each poll (the old way) the order was
fixed when a poll slot was given, up to `concurrency` polls before the token arrived, so a
new job queued behind the whole backlog. Kept apart from the poller so a lease-fed poller
(jobs claimed from the database) can use the same two calls.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol

#: A poll still waiting at its latest acceptable time (`Schedule.latest`) jumps ahead of every
#: ordinary one (but not of new jobs' first looks): `POLL_MAX_INTERVAL` is a promise.
OVERDUE_LEAD = 5e5


def priority_of(schedule: object, tracked: Any, due: float) -> tuple[float, float | None]:
    """The schedule's (priority key, latest acceptable time) for a due poll; (due, None) if
    the schedule has no opinion."""
    priority = getattr(schedule, "priority", None)
    latest = getattr(schedule, "latest", None)
    return (
        float(priority(tracked, due)) if priority is not None else due,
        float(latest(tracked, due)) if latest is not None else None,
    )


class Entry(Protocol):
    """What the queue needs of a followed job (the poller's `Tracked`)."""

    due: float


class ReadyQueue:
    """Due polls by priority key; stale entries (rescheduled, finished) are skipped on pop."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, float, int]] = []
        #: (latest acceptable time, seq, due, job id) of the entries waiting in `_heap`.
        self._overdue: list[tuple[float, int, float, int]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def add(self, job_id: int, due: float, key: float, latest: float | None = None) -> None:
        """`job_id`, due at `due`, waits for a token with priority `key`; if it still waits
        at `latest`, it moves up (`promote`)."""
        heapq.heappush(self._heap, (key, next(self._seq), due, job_id))
        if latest is not None and latest - OVERDUE_LEAD < key:
            heapq.heappush(self._overdue, (latest, next(self._seq), due, job_id))

    def promote(self, now: float, lookup: Callable[[int], Entry | None]) -> None:
        """Move entries past their latest acceptable time ahead of the ordinary ones."""
        while self._overdue and self._overdue[0][0] <= now:
            latest, _, due, job_id = heapq.heappop(self._overdue)
            entry = lookup(job_id)
            if entry is not None and entry.due == due:  # still waiting: not polled yet
                heapq.heappush(self._heap, (latest - OVERDUE_LEAD, next(self._seq), due, job_id))

    def has_valid(self, lookup: Callable[[int], Entry | None]) -> bool:
        """Drop stale entries at the head; True if a live one waits (`lookup` finds jobs)."""
        while self._heap:
            _, _, due, job_id = self._heap[0]
            entry = lookup(job_id)
            if entry is not None and entry.due == due:
                return True
            heapq.heappop(self._heap)
        return False

    def pop(self, lookup: Callable[[int], Entry | None]) -> int | None:
        """The job id of the best live entry, or None."""
        if not self.has_valid(lookup):
            return None
        return heapq.heappop(self._heap)[3]

    def clear(self) -> None:
        self._heap.clear()
        self._overdue.clear()
