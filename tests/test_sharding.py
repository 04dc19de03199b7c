"""Discord sharding: which bot the settings build, and IDENTIFY pacing across processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.core.config import Settings
from bot.core.identify import IdentifyGate
from bot.core.runtime import Runtime, open_runtime
from bot.discord.bot import ReelBot, ShardedReelBot, make_bot
from bot.testing.notifier import RecordingNotifier
from tests.conftest import API_KEY, POSTGRES_URL


def settings(api_url: str, tmp_path: Path, **values: object) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        APIMART_API_KEY=API_KEY,
        APIMART_BASE_URL=api_url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
        **values,
    )


@pytest.fixture
async def runtime(api_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with open_runtime(settings(api_url, tmp_path), RecordingNotifier()) as rt:
        yield rt


async def test_without_shard_settings_one_plain_bot(
    runtime: Runtime, api_url: str, tmp_path: Path
) -> None:
    bot = make_bot(runtime, settings(api_url, tmp_path))
    assert type(bot) is ReelBot
    assert not isinstance(bot, discord.AutoShardedClient)
    assert bot.shard_count is None


async def test_shard_settings_build_an_auto_sharded_bot_for_those_shards(
    runtime: Runtime, api_url: str, tmp_path: Path
) -> None:
    bot = make_bot(runtime, settings(api_url, tmp_path, SHARD_COUNT="8", SHARD_IDS="2-3,6"))
    assert isinstance(bot, ShardedReelBot)
    assert isinstance(bot, commands.AutoShardedBot)
    assert bot.shard_count == 8
    assert bot.shard_ids == [2, 3, 6]
    # The same bot otherwise: its tree, its error ladder, its gateway check.
    assert bot.gateway_problem() == "not connected to Discord yet"
    assert "gateway" in runtime.readiness.names


# -- the IDENTIFY gate ---------------------------------------------------------------------


@pytest.fixture
async def engines() -> AsyncIterator[list[AsyncEngine]]:
    """Two engines: two workers' separate database sessions."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL: set REELBOT_TEST_POSTGRES_URL (.ci/run does)")
    url = Settings(_env_file=None, DATABASE_URL=POSTGRES_URL).DATABASE_URL  # type: ignore[call-arg]
    made = [create_async_engine(url), create_async_engine(url)]
    try:
        yield made
    finally:
        for engine in made:
            await engine.dispose()


async def test_one_identify_per_bucket_across_workers(engines: list[AsyncEngine]) -> None:
    first, second = (IdentifyGate(e, hold=1.0) for e in engines)
    try:
        assert first.shared and second.shared
        started = time.monotonic()
        assert await first.wait(0, max_concurrency=1)
        assert time.monotonic() - started < 0.5
        # Shard 1 of another worker is in the same bucket (1 % 1): it waits out the hold.
        await second.wait(1, max_concurrency=1)
        assert time.monotonic() - started >= 0.9
        # With max_concurrency 2, shards 2 and 3 are in different buckets: no waiting.
        await asyncio.sleep(1.1)
        started = time.monotonic()
        await asyncio.gather(first.wait(2, max_concurrency=2), second.wait(3, max_concurrency=2))
        assert time.monotonic() - started < 0.5
    finally:
        await first.close()
        await second.close()


async def test_a_worker_that_goes_away_releases_its_bucket(engines: list[AsyncEngine]) -> None:
    first, second = (IdentifyGate(e, hold=30.0) for e in engines)
    try:
        await first.wait(0, max_concurrency=1)
        waiting = asyncio.create_task(second.wait(0, max_concurrency=1))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await first.close()  # its session ends (as when the process dies): the lock goes
        started = time.monotonic()
        await asyncio.wait_for(waiting, timeout=5.0)
        assert time.monotonic() - started < 2.0
    finally:
        await first.close()
        await second.close()


async def test_on_sqlite_the_gate_leaves_pacing_to_discord_py(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        gate = IdentifyGate(engine)
        assert not gate.shared
        assert await gate.wait(0, 1) is False
    finally:
        await engine.dispose()


async def test_an_unreachable_database_never_stops_the_bot_from_connecting() -> None:
    """discord.py ends its connect loop on an unexpected exception: the gate must not raise."""
    engine = create_async_engine("postgresql+asyncpg://reelbot:x@127.0.0.1:9/none")
    try:
        gate = IdentifyGate(engine, hold=0.2)
        started = time.monotonic()
        assert await gate.wait(0, 1) is True
        assert 0.2 <= time.monotonic() - started < 5.0  # paced alone instead
    finally:
        await engine.dispose()
