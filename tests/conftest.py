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
import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
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


def _per_worker(url: str | None) -> str | None:
    """Under pytest-xdist each worker gets its own PostgreSQL database, created on first use:
    the tests wipe theirs, and two workers must not wipe each other's."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    base = make_url(url)
    name = f"{base.database}_{worker}"

    async def create() -> None:
        conn = await asyncpg.connect(
            host=base.host,
            port=base.port,
            user=base.username,
            password=base.password,
            database=base.database,
        )
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return base.set(database=name).render_as_string(hide_password=False)


#: A PostgreSQL database the tests may wipe; `.ci/run` starts one and sets this. Rewritten
#: here, before any test module reads it, when the tests run in several processes.
POSTGRES_URL = _per_worker(os.environ.get("REELBOT_TEST_POSTGRES_URL"))
if POSTGRES_URL:
    os.environ["REELBOT_TEST_POSTGRES_URL"] = POSTGRES_URL


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


@dataclass
class Parts:
    """What every test pipeline is made of, before a `JobService` is put on top."""

    clock: SystemClock
    limiter: RateLimiter
    api: ApimartClient
    notifier: RecordingNotifier
    poller: Poller


def pipeline_parts(
    session: aiohttp.ClientSession,
    api_url: str,
    store: Store,
    *,
    timeout: float = 2.0,
    attempts: int = 3,
    rate: float = 500.0,
    interval: float = 0.03,
    **poller_kw: Any,
) -> Parts:
    """A fast pipeline on the stand-in: a short retry policy and a fixed, quick schedule."""
    clock = SystemClock()
    limiter = RateLimiter(clock, rate=rate)
    api = ApimartClient(
        session,
        api_url,
        API_KEY,
        timeout=timeout,
        retry=RetryPolicy(attempts=attempts, base_delay=0.01, max_delay=interval + 0.02),
        on_rate_limited=None,
    )
    notifier = RecordingNotifier()
    schedule = FixedSchedule(initial_delay=interval, interval=interval, max_interval=3 * interval)
    poller = Poller(api, store, notifier, clock, schedule, limiter, **poller_kw)
    return Parts(clock, limiter, api, notifier, poller)


@asynccontextmanager
async def running_pipeline(
    session: aiohttp.ClientSession,
    api_url: str,
    store: Store,
    *,
    resume: bool = True,
    **options: Any,
) -> AsyncIterator[Pipeline]:
    """The parts with a `JobService`, the poller running; the store is closed on the way out."""
    parts = pipeline_parts(session, api_url, store, **options)
    jobs = JobService(
        store=store, api=parts.api, poller=parts.poller, notifier=parts.notifier, clock=parts.clock
    )
    task = asyncio.create_task(parts.poller.run())
    try:
        if resume:
            await jobs.resume()
        yield Pipeline(store, parts.api, parts.poller, jobs, parts.notifier, parts.limiter)
    finally:
        await parts.poller.stop()
        await task
        await store.close()


@pytest.fixture
async def make_pipeline(api_url: str, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Open a pipeline on a database file; several may be opened in turn (a "restart")."""
    async with aiohttp.ClientSession() as session:

        def open_pipeline(**options: Any) -> Any:
            async def opened() -> AsyncIterator[Pipeline]:
                store = await Store.open(database_url)
                async with running_pipeline(session, api_url, store, **options) as pipeline:
                    yield pipeline

            return asynccontextmanager(opened)()

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
