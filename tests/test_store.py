"""The store keeps every job across restarts and answers the queries the bot needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.core.job import JobState
from bot.core.request import build_request
from bot.core.store import Store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()


async def test_a_job_survives_reopening_the_database(database_url: str) -> None:
    url = database_url
    first = await Store.open(url)
    request = build_request(
        model="veo3.1-fast-official", prompt="p", seed=7, images=["https://a/b.png"]
    )
    job = await first.create(
        request, now=100.0, origin={"channel_id": 1}, requester="9", guild_id="3"
    )
    await first.update(job, state=JobState.RUNNING, task_id="task_1", submitted_at=101.0)
    await first.close()

    second = await Store.open(url)
    again = await second.get(job.id)
    await second.close()
    assert again is not None
    assert again.request == request
    assert (again.state, again.task_id, again.origin, again.requester) == (
        JobState.RUNNING,
        "task_1",
        {"channel_id": 1},
        "9",
    )


async def test_unfinished_means_open_or_undelivered(store: Store) -> None:
    request = build_request(model="sora-2", prompt="p")
    running = await store.create(request, now=1.0)
    await store.update(running, state=JobState.RUNNING, task_id="t1")
    done_not_told = await store.create(request, now=2.0)
    await store.update(done_not_told, state=JobState.COMPLETED)
    done_and_told = await store.create(request, now=3.0)
    await store.update(done_and_told, state=JobState.FAILED, delivered=True)
    assert [j.id for j in await store.unfinished()] == [running.id, done_not_told.id]
    assert (await store.get_by_task("t1")) is not None


async def test_recent_and_spent(store: Store) -> None:
    request = build_request(model="sora-2", prompt="p")
    for i, (who, cost) in enumerate([("a", 0.4), ("b", 1.0), ("a", 0.0)]):
        job = await store.create(request, now=10.0 + i, requester=who, guild_id="g")
        await store.update(job, state=JobState.COMPLETED, cost=cost)
    mine = await store.recent(requester="a")
    assert [j.cost for j in mine] == [0.0, 0.4]  # newest first
    assert await store.spent(guild_id="g") == pytest.approx(1.4)
    assert await store.spent(guild_id="g", since=11.0) == pytest.approx(1.0)


async def test_only_known_fields_are_updatable(store: Store) -> None:
    job = await store.create(build_request(model="sora-2", prompt="p"), now=1.0)
    with pytest.raises(ValueError, match="not updatable"):
        await store.update(job, model="other")


async def test_plain_sqlite_url_gets_the_async_driver(tmp_path: Path) -> None:
    from bot.core.config import Settings

    settings = Settings(_env_file=None, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")  # type: ignore[call-arg]
    assert settings.DATABASE_URL.startswith("sqlite+aiosqlite:///")
    store = await Store.open(settings.DATABASE_URL)
    await store.close()
    assert (tmp_path / "x.db").exists()


async def test_concurrent_writes_and_reads_all_land(store: Store) -> None:
    """Submits, state changes, progress batches and reads at once (SQLite: one writer)."""
    request = build_request(model="sora-2", prompt="p")
    jobs = await asyncio.gather(*(store.create(request, now=float(i)) for i in range(300)))
    await asyncio.gather(
        *(store.update(j, state=JobState.RUNNING, task_id=f"t{j.id}") for j in jobs),
        *(store.update_many([(j, {"progress": 50})]) for j in jobs[:100]),
        *(store.unfinished() for _ in range(10)),
    )
    stored = await store.unfinished()
    assert len(stored) == 300 and {j.state for j in stored} == {JobState.RUNNING}
