"""Clocks for tests and the benchmark: one that moves only when told to, one sped up."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time


class ManualClock:
    """Simulated time: sleepers wake when `advance()` moves `now()` past their deadline.

    With `auto=True` the clock jumps straight to the next deadline whenever every task is
    waiting on it, so a loop that would sleep for hours finishes in milliseconds.
    """

    def __init__(self, start: float = 1_800_000_000.0, *, auto: bool = False) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()
        self.auto = auto

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._ids), future))
        await future

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        sleeper = asyncio.ensure_future(self.sleep(timeout))
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()
        return event.is_set()

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline passes, in order."""
        target = self._now + seconds
        while True:
            await self._settle()
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
        self._now = target
        await self._settle()

    async def run_until(self, deadline: float) -> None:
        await self.advance(max(0.0, deadline - self._now))

    def next_deadline(self) -> float | None:
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    @staticmethod
    async def _settle(rounds: int = 5) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)


class ScaledClock:
    """Wall time sped up `scale` times, matching the stand-in API's `time_scale`.

    The bot then reasons in the API's time (a 240 s job is 240 s to the schedule) while the run
    takes 240/scale real seconds.
    """

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._t0 = time.time()
        self._m0 = time.monotonic()

    def now(self) -> float:
        return self._t0 + (time.monotonic() - self._m0) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        try:
            async with asyncio.timeout(max(0.0, timeout) / self.scale):
                await event.wait()
        except TimeoutError:
            pass
        return event.is_set()
