"""The loop that feeds the poller's heap from the jobs table: the heap is a cache of the claim.

Every `CLAIM_EVERY` seconds a bot worker:

1. polls at once the held jobs a webhook marked due on another worker (`Leases.poked`);
2. (on a loop of its own, every quarter of `LEASE_SECONDS`) renews its leases, and forgets
   the jobs whose lease it lost (no message: the new owner carries on);
3. claims up to its fair share of the jobs that need work — open jobs / live bots, so a
   fresh worker gets work and a dead one's jobs are spread over the rest — and hands each
   to `take_over` (poll it, deliver it, or settle a submit a dead worker left halfway);
4. gives back (releases) the jobs it holds beyond its share plus a margin, latest-due first,
   so that a worker joining a busy set (a rolling deploy) soon carries its part.

A terminal process (`reelbot generate`) runs the same loop without claiming: it keeps the
lease of its own job alive and never touches anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable

from bot.core.clock import Clock
from bot.core.job import Job
from bot.core.leases import Leases
from bot.core.poller import Poller
from bot.core.workers import WorkerRegistry

log = logging.getLogger(__name__)

#: Seconds between claim rounds.
CLAIM_EVERY = 1.0
#: Jobs claimed per round at most (a worker taking over thousands takes them in steps).
MAX_CLAIM = 200


class Claimer:
    def __init__(
        self,
        leases: Leases,
        poller: Poller,
        take_over: Callable[[Job], Awaitable[object]],
        clock: Clock,
        *,
        registry: WorkerRegistry | None = None,
        every: float = CLAIM_EVERY,
    ) -> None:
        self.leases = leases
        self.poller = poller
        self.take_over = take_over
        self.clock = clock
        self.registry = registry
        #: False until `resume()`: a terminal process never claims; a bot starts when its
        #: notifier is bound (the loop meanwhile keeps its own jobs' leases alive).
        self.claiming = False
        self.every = every
        self.renew_every = leases.lease_seconds / 4
        self._task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        #: Called with the number of jobs taken over from a dead worker (a metrics counter).
        self.on_takeover: Callable[[int], None] | None = None

    def start(self) -> None:
        """Run the loops in the background: renewing leases; claiming after `resume`."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="reelbot-claimer")
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_loop(), name="reelbot-renewer")

    async def _renew_loop(self) -> None:
        """Renewals on their own loop: a slow claim round never lets held leases run out."""
        while True:
            asleep = self.clock.now()
            await self.clock.sleep(self.renew_every)
            started = self.clock.now()
            late = started - asleep - self.renew_every
            try:
                for job_id in await self.leases.renew():
                    self.poller.forget(job_id)
            except Exception:
                log.exception("renewing leases failed; retrying")
            took = self.clock.now() - started
            if late + took > self.leases.lease_seconds / 2:
                # The lease is at risk: an overloaded process (or database) is the usual cause.
                log.warning(
                    "lease renewal ran %.1fs late and took %.1fs (LEASE_SECONDS=%g)",
                    late,
                    took,
                    self.leases.lease_seconds,
                )

    async def resume(self) -> None:
        """Start claiming, with one round at once (a bot's resume at startup)."""
        self.claiming = True
        await self.tick()

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.every)
            try:
                await self.tick()
            except Exception:
                log.exception("claim round failed; retrying")

    async def tick(self) -> None:
        for task_id in await self.leases.poked():
            self.poller.poke(task_id, forward=False)
        if not self.claiming:
            return
        target = await self._share()
        held = len(self.leases.held)
        live = self.registry.live_terminals if self.registry is not None else ()
        before = self.leases.takeovers
        claimed: list[Job] = []
        if held < target:
            claimed = await self.leases.claim(min(MAX_CLAIM, target - held), live_terminals=live)
        # A dead worker's jobs are taken at once, share or not: it still counts as live until
        # its heartbeat is old, and its requesters should not wait for that. The surplus is
        # given back (below) in later rounds.
        claimed += await self.leases.claim(MAX_CLAIM, live_terminals=live, orphans_only=True)
        for job in claimed:
            try:
                await self.take_over(job)
            except Exception:
                log.exception("job %s: taking it over failed; it stays leased", job.id)
        if self.on_takeover is not None and self.leases.takeovers > before:
            self.on_takeover(self.leases.takeovers - before)
        held = len(self.leases.held)
        if not claimed and held > target + max(2, math.ceil(target * 0.1)):
            await self._shed(held - target)

    async def _share(self) -> int:
        open_jobs = await self.leases.open_count()
        bots = self.registry.live_bots if self.registry is not None else 1
        return math.ceil(open_jobs / max(1, bots))

    async def _shed(self, count: int) -> None:
        """Give back the held jobs due last (their next poll is furthest away)."""
        releases = self.poller.release_latest(count)
        if releases:
            released = await self.leases.release(releases)
            log.info("released %d job(s) beyond this worker's share", released)

    async def stop(self) -> None:
        """Stop claiming (call before the poller drains)."""
        self.claiming = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        """Stop renewing (after `release_all`): what is still held runs out in one lease."""
        await self.stop()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    async def release_all(self) -> None:
        """After the poller drained: give every resting job back so others take it at once.

        Jobs halfway through a submit are kept: their lease runs out, and whoever takes them
        then settles them as a restart would (a submit is never repeated).
        """
        releases = self.poller.release_latest(len(self.leases.held))
        releases += [
            (job, None) for job in self.poller.delivery_pending() if job.id in self.leases.held
        ]
        if releases:
            try:
                count = await self.leases.release(releases)
                log.info("released %d job(s) for the other workers", count)
            except Exception:
                log.exception(
                    "releasing leases failed; they run out in %.0fs", self.leases.lease_seconds
                )
