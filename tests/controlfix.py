"""A pipeline with the community controls (caps, queue, usage) on a database that survives
reopening (a restart), for SQLite and, where available, PostgreSQL.

Import with `from tests.controlfix import Controlled, controlled_fixture` (the module's
fixtures depend on conftest's `api_url` and `database_url`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bot.core.catalog import CATALOG
from bot.core.controls.admission import Admission, Requester
from bot.core.controls.money import parse_usd
from bot.core.controls.queue import Dispatcher
from bot.core.controls.service import Controls
from bot.core.job import Job, JobState
from bot.core.jobs import JobService, Origin
from bot.core.poller import Poller
from bot.core.request import build_request
from bot.core.store import Store
from bot.testing.fake_apimart import PRICE_PER_SECOND
from bot.testing.notifier import RecordingNotifier
from tests.conftest import pipeline_parts

GUILD = "1000"


def sora(prompt: str = "a kite", **fields: Any) -> Any:
    return build_request(model="sora-2", prompt=prompt, **fields)


def stand_in_prices() -> dict[tuple[str, str], int]:
    """The stand-in's own prices, as a PRICES_FILE would give them."""
    return {
        (model, res.lower()): parse_usd(str(price))
        for model, by_res in PRICE_PER_SECOND.items()
        for res, price in by_res.items()
        if model in CATALOG
    }


@dataclass
class Controlled:
    store: Store
    jobs: JobService
    controls: Controls
    dispatcher: Dispatcher
    notifier: RecordingNotifier
    poller: Poller

    async def ask(
        self,
        member: str,
        request: Any = None,
        *,
        guild: str | None = GUILD,
        roles: tuple[str, ...] = (),
    ) -> Admission:
        """What a front end does: admit, then launch (a queued job is only made ready)."""
        admission = await self.jobs.admit(
            request or sora(f"from {member}"),
            origin=Origin(kind="test"),
            requester=member,
            guild_id=guild,
            role_ids=roles,
        )
        await self.jobs.launch(admission.job)
        return admission

    async def job(self, job_id: int) -> Job:
        job = await self.store.get(job_id)
        assert job is not None
        return job

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.02)

    async def wait_settled(self, timeout: float = 10.0) -> None:
        """Until no job is queued or running (every admitted job has ended)."""

        async def idle() -> bool:
            jobs = await self.store.recent(limit=1000)
            return all(j.state.terminal for j in jobs)

        await self.wait_for(idle, timeout)

    async def set_limit(self, name: str, value: str, guild: str = GUILD) -> None:
        await self.controls.changes.set_limit(guild, "admin", name, value)


@pytest.fixture(name="open_controlled")
async def open_controlled_fixture(
    api_url: str, database_url: str
) -> AsyncIterator[Callable[..., Any]]:
    """Open the controlled pipeline; open it again after closing it to model a restart."""
    async with aiohttp.ClientSession() as session:

        @asynccontextmanager
        async def open_it(
            *,
            operator_daily: int | None = None,
            operator_monthly: int | None = None,
            seed: bool = True,
            resume: bool = True,
        ) -> AsyncIterator[Controlled]:
            store = await Store.open(database_url)
            parts = pipeline_parts(session, api_url, store, timeout=5.0, rate=1000.0)
            clock, notifier, poller = parts.clock, parts.notifier, parts.poller
            api = parts.api
            controls = Controls(
                store, clock, operator_daily=operator_daily, operator_monthly=operator_monthly
            )
            if seed:
                await controls.seed_prices(stand_in_prices())
            jobs = JobService(
                store=store,
                api=api,
                poller=poller,
                notifier=notifier,
                clock=clock,
                controls=controls,
            )
            dispatcher = Dispatcher(store, jobs.launch, interval=0.05)
            controls.dispatcher = dispatcher
            tasks = [asyncio.create_task(poller.run()), asyncio.create_task(dispatcher.run())]
            try:
                if resume:
                    await jobs.resume()
                yield Controlled(store, jobs, controls, dispatcher, notifier, poller)
            finally:
                await dispatcher.stop()
                await poller.stop()
                await asyncio.gather(*tasks)
                await controls.settle_alerts()
                await store.close()

        yield open_it


def submitted_prompts(fake: Any) -> list[str]:
    return [body["prompt"] for body in fake.submits]


__all__ = ["GUILD", "Controlled", "JobState", "Requester", "sora", "submitted_prompts"]
