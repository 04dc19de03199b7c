"""Fault-test fixtures: a pipeline on the stand-in APIMart (real HTTP) with a store that may fail,
and `tests/test_e2e.py`'s world: the real `reelbot` process against the fake Discord and the
stand-in APIMart, both in this test process on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bot.core.apimart import ApimartClient, RetryPolicy
from bot.core.clock import SystemClock
from bot.core.jobs import JobService
from bot.core.poller import FixedSchedule, Poller, RateLimiter
from bot.core.store import Store
from bot.testing.notifier import RecordingNotifier
from bot.testing.store import FlakyStore
from tests.conftest import API_KEY, Pipeline
from tests.test_e2e import world_fixture  # noqa: F401 - fixture


@pytest.fixture
async def faulty_pipeline(api_url: str, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Like `make_pipeline`, with a `FlakyStore` and the poller's bounds adjustable."""
    async with aiohttp.ClientSession() as session:

        @asynccontextmanager
        async def open_pipeline(
            *, resume: bool = True, fail_when: Any = None, **poller_kw: Any
        ) -> AsyncIterator[Pipeline]:
            clock = SystemClock()
            limiter = RateLimiter(clock, rate=500.0)
            api = ApimartClient(
                session,
                api_url,
                API_KEY,
                timeout=2.0,
                retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02),
            )
            store: Store = await FlakyStore.open(database_url)
            if fail_when is not None:
                store.fail_when = fail_when  # type: ignore[attr-defined]
            notifier = RecordingNotifier()
            schedule = FixedSchedule(initial_delay=0.02, interval=0.02, max_interval=0.05)
            poller = Poller(api, store, notifier, clock, schedule, limiter, **poller_kw)
            jobs = JobService(store=store, api=api, poller=poller, notifier=notifier, clock=clock)
            task = asyncio.create_task(poller.run())
            try:
                if resume:
                    await jobs.resume()
                yield Pipeline(store, api, poller, jobs, notifier, limiter)
            finally:
                await poller.stop()
                await task
                await store.close()

        yield open_pipeline
