"""Shared fixtures: the stand-in APIMart over real HTTP, a store, and a running pipeline."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bot.core.apimart import ApimartClient, RetryPolicy
from bot.core.clock import SystemClock
from bot.core.config import Settings
from bot.core.jobs import JobService
from bot.core.poller import FixedSchedule, Poller, RateLimiter
from bot.core.store import Store, metadata
from bot.testing.fake_apimart import FakeApimart
from bot.testing.notifier import RecordingNotifier

API_KEY = "sk-test-0123456789abcdef"
#: A PostgreSQL database the tests may wipe; `.ci/run` starts one and sets this.
POSTGRES_URL = os.environ.get("REELBOT_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store-backed test runs on SQLite and, where one is available, on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL: set REELBOT_TEST_POSTGRES_URL (.ci/run does)")
    url = Settings(_env_file=None, DATABASE_URL=POSTGRES_URL).DATABASE_URL  # type: ignore[call-arg]
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()
    return url


@pytest.fixture
def fake() -> FakeApimart:
    """A stand-in APIMart where a 4-minute task takes a quarter of a second."""
    return FakeApimart(api_key=API_KEY, time_scale=1000.0)


@pytest.fixture
async def api_url(fake: FakeApimart, aiohttp_server: Any) -> str:
    server = await aiohttp_server(fake.app)
    return str(server.make_url("")).rstrip("/")


@dataclass
class Pipeline:
    store: Store
    api: ApimartClient
    poller: Poller
    jobs: JobService
    notifier: RecordingNotifier
    limiter: RateLimiter


PipelineFactory = Callable[..., Any]


@pytest.fixture
async def make_pipeline(api_url: str, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Open a pipeline on a database file; several may be opened in turn (a "restart")."""
    async with aiohttp.ClientSession() as session:

        @asynccontextmanager
        async def open_pipeline(
            *, timeout: float = 2.0, resume: bool = True, **poller_kw: Any
        ) -> AsyncIterator[Pipeline]:
            clock = SystemClock()
            limiter = RateLimiter(clock, rate=500.0)
            api = ApimartClient(
                session,
                api_url,
                API_KEY,
                timeout=timeout,
                retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05),
                on_rate_limited=None,
            )
            store = await Store.open(database_url)
            notifier = RecordingNotifier()
            schedule = FixedSchedule(initial_delay=0.03, interval=0.03, max_interval=0.1)
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


@pytest.fixture
async def pipeline(make_pipeline: Callable[..., Any]) -> AsyncIterator[Pipeline]:
    async with make_pipeline() as opened:
        yield opened


@pytest.fixture(autouse=True)
def _own_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and every `reelbot` it starts) gets its own user config and data folders, so
    a developer's own ~/.config/reelbot/.env or database never leaks into a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-data"))
    monkeypatch.delenv("REELBOT_IN_CONTAINER", raising=False)
