"""Hostile pass on several workers (issue 11): what a database hiccup must not leave behind.

Found by cutting PostgreSQL (a TCP proxy in front of it) while a result was being posted:
the result reached the channel, the `delivered` write failed, and the worker kept renewing
the job's lease for ever without following it. The row stayed undelivered and owned while
that worker lived (open in `reelbot jobs` and the metrics, never handed to anyone); only a
restart would look at it again. Now the worker lets the lease run out, and whoever claims the
job next finds its result in the channel (the nonce, the history) and records it delivered.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.core.clock import SystemClock
from bot.core.job import Job
from bot.core.leases import Leases
from bot.core.request import build_request
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan

CLOCK = SystemClock()
LEASE = 0.6


async def test_a_delivered_flag_that_could_not_be_written_hands_the_job_back(
    faulty_pipeline: Any, fake: FakeApimart
) -> None:
    def delivered_write(job: Job, fields: dict[str, Any]) -> bool:
        return fields.get("delivered") is True

    fake.plan_next(FakeTaskPlan(duration_s=60))
    async with faulty_pipeline(fail_when=delivered_write) as a:
        a_leases = Leases(a.store, "A", CLOCK, LEASE)
        a.poller.leases = a.jobs.leases = a_leases
        job = await a.jobs.submit(build_request(model="sora-2", prompt="heron"))
        await a.notifier.wait_finished(job.id, timeout=10)
        async with asyncio.timeout(5):
            while a.store.failures == 0:  # type: ignore[attr-defined]
                await asyncio.sleep(0.02)
        a.store.fail_when = lambda job, fields: False  # type: ignore[attr-defined]
        # A's renewal loop runs on: a job A no longer follows must not be kept from others.
        for _ in range(3):
            await asyncio.sleep(LEASE / 2)
            await a_leases.renew()
        b_leases = Leases(a.store, "B", CLOCK, 30)
        taken = await b_leases.claim(5)
        assert [j.id for j in taken] == [job.id], "the undelivered job stayed locked to A"
        row = await a.store.get(job.id)
        assert row is not None and not row.delivered and row.owner == "B"
