"""The caller's deadline, carried to the API client's retry sleeps without a parameter.

A 429 with `Retry-After: 30` once made one `get_task` sleep 3 x 30 s inside the client while
`reelbot generate --timeout 8` waited (hostile finding R3): the client's retry loop knew the
policy's bounds but not how long its caller could still wait. The caller (the poller for one
poll, `generate` for the submit) says so here; the client gives up on a sleep that would end
past it and raises the error it has, so the caller ends the job its usual way.

A context variable rather than an argument: it reaches through `TaskReader` implementations
(the real client, the bench's simulation) without widening their signatures, and each asyncio
task carries its own. Deadlines are `time.monotonic()` instants: the client sleeps real time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("reelbot_deadline", default=None)


@contextmanager
def deadline_in(seconds: float | None) -> Iterator[None]:
    """Within the block, waits should end within `seconds` from now (None: no new bound).

    A deadline already in force and earlier stays: an inner caller can only shorten it.
    """
    if seconds is None or math.isnan(seconds):
        yield
        return
    until = time.monotonic() + max(0.0, seconds)
    outer = _deadline.get()
    token = _deadline.set(until if outer is None else min(outer, until))
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left() -> float | None:
    """Seconds until the deadline in force (never negative), or None when there is none."""
    until = _deadline.get()
    if until is None:
        return None
    return max(0.0, until - time.monotonic())
