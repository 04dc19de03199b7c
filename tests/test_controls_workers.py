"""Community limits hold across workers: two processes on one database cannot together pass a
cap, and a queued job is submitted once, by one of them (the admission and the queue's claim
are database transactions; the jobs they write are leased to the worker that wrote them)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from bot.core.clock import SystemClock
from bot.core.controls.admission import Refused
from bot.core.leases import Leases
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan
from tests.controlfix import (  # noqa: F401 - fixtures
    Controlled,
    open_controlled_fixture,
    submitted_prompts,
)


async def _two(open_controlled: Any, stack: AsyncExitStack) -> list[Controlled]:
    pair = []
    for name in ("A", "B"):
        c = await stack.enter_async_context(open_controlled())
        leases = Leases(c.store, name, SystemClock(), 30)
        c.jobs.leases = c.controls.leases = c.dispatcher.leases = c.poller.leases = leases
        pair.append(c)
    return pair


async def test_two_workers_together_cannot_pass_a_spend_cap(
    open_controlled: Any, fake: FakeApimart
) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _two(open_controlled, stack)
        await a.set_limit("server_daily_spend", "0.12")  # three sora-2 4 s videos

        async def one(c: Controlled, i: int) -> Any:
            try:
                return await c.ask(f"m{i}")
            except Refused as refusal:
                return refusal

        outcomes = await asyncio.gather(*(one((a, b)[i % 2], i) for i in range(20)))
        assert len([o for o in outcomes if not isinstance(o, Refused)]) == 3
        assert len(fake.submits) == 3


async def test_two_workers_submit_each_queued_job_once(
    open_controlled: Any, fake: FakeApimart
) -> None:
    fake.default_plan = FakeTaskPlan(duration_s=2000.0)  # 2 s: the first two hold the slots
    async with AsyncExitStack() as stack:
        a, b = await _two(open_controlled, stack)
        await a.set_limit("server_concurrent", "2")
        await asyncio.gather(*(((a, b)[i % 2]).ask(f"m{i:02}") for i in range(12)))
        assert len(fake.submit_attempts) == 2
        fake.default_plan = FakeTaskPlan(duration_s=50.0)
        await a.wait_settled(timeout=30)
        prompts = submitted_prompts(fake)
        assert len(prompts) == 12 and len(set(prompts)) == 12  # each exactly once
        async with asyncio.timeout(10):  # the results reach their notifier after the end
            while len(a.notifier.finished) + len(b.notifier.finished) < 12:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # a second copy would come now
        finished = a.notifier.finished_ids() + b.notifier.finished_ids()
        assert len(finished) == len(set(finished)) == 12  # each told once, by one worker
