"""Job leases between workers on one database (SQLite here, PostgreSQL when configured).

What a user would notice if these broke: a result posted twice (two workers delivering one
job), a result never posted (a dead worker's job never taken over), or a `reelbot generate`
beside the bot having its job declared lost while it was being made.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.core.clock import SystemClock
from bot.core.job import Job, JobState
from bot.core.leases import Leases
from bot.core.poller import RateLimiter
from bot.core.request import build_request
from bot.core.store import LeaseLost, Store
from bot.core.workers import AlreadyRunning, SqliteLock, WorkerRegistry
from bot.testing.fake_apimart import FakeTaskPlan

CLOCK = SystemClock()


async def _running_jobs(store: Store, count: int) -> list[Job]:
    jobs = []
    for i in range(count):
        job = await store.create(build_request(model="sora-2", prompt=f"p{i}"), now=CLOCK.now())
        await store.update(job, state=JobState.RUNNING, task_id=f"task_{i}")
        jobs.append(job)
    return jobs


@pytest.fixture
async def store(database_url: str) -> Any:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()


async def test_two_workers_claiming_at_once_never_take_the_same_job(store: Store) -> None:
    await _running_jobs(store, 30)
    a, b = Leases(store, "A", CLOCK, 30), Leases(store, "B", CLOCK, 30)
    got_a, got_b = await asyncio.gather(a.claim(20), b.claim(20))
    ids_a, ids_b = {j.id for j in got_a}, {j.id for j in got_b}
    assert not ids_a & ids_b
    assert len(ids_a | ids_b) == 30
    assert await a.claim(20) == []  # nothing left: every lease is fresh


async def test_a_worker_that_lost_its_lease_writes_nothing(store: Store) -> None:
    (job,) = await _running_jobs(store, 1)
    a, b = Leases(store, "A", CLOCK, 0.2), Leases(store, "B", CLOCK, 30)
    (mine,) = await a.claim(5)
    assert await b.claim(5) == []
    await asyncio.sleep(0.3)  # A stalls past its lease
    (theirs,) = await b.claim(5)
    assert b.takeovers == 1 and theirs.fence == mine.fence + 1

    with pytest.raises(LeaseLost):
        await store.update(mine, state=JobState.COMPLETED, video_urls=["https://stale"])
    await store.update(theirs, progress=40)
    row = await store.get(job.id)
    assert row is not None and row.state is JobState.RUNNING and row.video_urls == []
    assert row.progress == 40 and row.owner == "B"
    assert await a.renew() == [job.id]  # A learns it at its next renewal, and lets go
    assert not a.holds(job.id)


async def test_renewal_keeps_jobs_and_release_hands_them_over_at_once(store: Store) -> None:
    jobs = await _running_jobs(store, 3)
    a, b = Leases(store, "A", CLOCK, 0.5), Leases(store, "B", CLOCK, 30)
    claimed = await a.claim(10)
    for _ in range(3):
        await asyncio.sleep(0.2)
        assert await a.renew() == []
    assert await b.claim(10) == []  # renewed past the first lease's end: still A's
    due = CLOCK.now() + 99
    assert await a.release([(claimed[0], due)]) == 1
    (taken,) = await b.claim(10)
    assert taken.id == jobs[0].id and taken.next_poll_at == pytest.approx(due)
    assert b.takeovers == 0  # released, not taken over from a dead worker


async def test_a_job_born_leased_is_left_alone_while_its_creator_lives(store: Store) -> None:
    """`reelbot generate` beside a starting bot: its job is not the bot's to settle."""
    cli = Leases(store, "cli-1", CLOCK, 30)
    job = await store.create(
        build_request(model="sora-2", prompt="mine"),
        now=CLOCK.now(),
        owner=cli.worker_id,
        lease_until=cli.until(),
    )
    cli.hold(job)
    bot = Leases(store, "bot-1", CLOCK, 30)
    assert await bot.claim(10) == []
    await store.update(job, state=JobState.SUBMITTING)  # the creator's writes go through


async def test_the_only_bot_on_sqlite_takes_dead_bots_jobs_at_once_but_not_a_live_cli(
    tmp_path: Path,
) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
    try:
        dead_bot = Leases(store, "bot-old", CLOCK, 30)
        cli = Leases(store, "cli-live", CLOCK, 30)
        for leases in (dead_bot, cli):
            await store.create(
                build_request(model="sora-2", prompt=leases.worker_id),
                now=CLOCK.now(),
                owner=leases.worker_id,
                lease_until=leases.until(),
            )
        restarted = Leases(store, "bot-new", CLOCK, 30, exclusive=True)
        taken = await restarted.claim(10, live_terminals=["cli-live"])
        assert [j.request.prompt for j in taken] == ["bot-old"]
    finally:
        await store.close()


async def test_a_webhook_reaching_another_worker_makes_the_owner_poll(store: Store) -> None:
    (job,) = await _running_jobs(store, 1)
    owner, other = Leases(store, "A", CLOCK, 30), Leases(store, "B", CLOCK, 30)
    await owner.claim(5)
    assert await owner.poked() == []
    assert await other.mark_due("task_0")
    assert await owner.poked() == ["task_0"]
    assert await owner.poked() == []  # once
    row = await store.get(job.id)
    assert row is not None and row.next_poll_at is not None


async def test_workers_share_the_budget_and_one_429_slows_all(store: Store) -> None:
    first_limiter = RateLimiter(CLOCK, 20.0)
    second_limiter = RateLimiter(CLOCK, 20.0)
    first = WorkerRegistry(store, "A", CLOCK, limiter=first_limiter, heartbeat_every=0.5)
    second = WorkerRegistry(store, "B", CLOCK, limiter=second_limiter, heartbeat_every=0.5)
    await first.register()
    assert first_limiter.max_rate == 20.0
    await second.register()
    # The newcomer waits until the first has seen it and halved its share.
    assert second_limiter.paused_until >= CLOCK.now() + 0.5
    await first.beat()
    assert first_limiter.max_rate == second_limiter.max_rate == 10.0
    assert first.live_bots == second.live_bots == 2

    first_limiter.penalize(retry_after=3.0)
    await first.beat()  # published (the heartbeat loop does this at once on a 429)
    await second.beat()
    assert second_limiter.paused_until >= CLOCK.now() + 2.0
    assert second_limiter.rate <= 5.0

    await second.unregister()
    await first.beat()
    assert first_limiter.max_rate == 20.0


def test_a_second_bot_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    first = SqliteLock(tmp_path / "reelbot.db")
    first.acquire()
    try:
        with pytest.raises(AlreadyRunning, match="PostgreSQL"):
            SqliteLock(tmp_path / "reelbot.db").acquire()
    finally:
        first.release()
    again = SqliteLock(tmp_path / "reelbot.db")
    again.acquire()  # free once the first has gone
    again.release()


async def test_a_poller_that_lost_a_job_says_nothing_and_the_new_owner_delivers(
    make_pipeline: Any, fake: Any
) -> None:
    fake.plan_next(FakeTaskPlan(duration_s=600))  # 0.6 s at the fixture's time scale
    async with make_pipeline() as a, make_pipeline(resume=False) as b:
        a_leases = Leases(a.store, "A", CLOCK, 0.2)
        b_leases = Leases(b.store, "B", CLOCK, 30)
        a.poller.leases = a.jobs.leases = a_leases
        b.poller.leases = b_leases
        job = await a.jobs.submit(build_request(model="sora-2", prompt="contested"))
        assert job.owner == "A" and job.id in a.poller
        await asyncio.sleep(0.3)  # A never renews: its lease runs out
        (taken,) = await b_leases.claim(5)
        b.poller.track(taken)
        finished = await b.notifier.wait_finished(job.id, timeout=10)
        assert finished.state is JobState.COMPLETED
        await asyncio.sleep(0.2)
        assert a.notifier.finished == []  # A lost it: no second result
        assert job.id not in a.poller
        row = await b.store.get(job.id)
        assert row is not None and row.delivered and row.owner == "B"


async def test_a_callback_reaching_another_worker_has_the_owner_poll_at_once(
    make_pipeline: Any, fake: Any
) -> None:
    from bot.core.claimer import Claimer

    fake.plan_next(FakeTaskPlan(duration_s=60_000))  # a minute: still running throughout
    async with make_pipeline() as a, make_pipeline(resume=False) as b:
        a.poller.leases = a.jobs.leases = Leases(a.store, "A", CLOCK, 30)
        b.poller.leases = Leases(b.store, "B", CLOCK, 30)
        job = await a.jobs.submit(build_request(model="sora-2", prompt="heron"))
        assert job.task_id is not None
        tracked = a.poller.tracked(job.id)
        assert tracked is not None
        await asyncio.sleep(0.1)
        a.poller._push(tracked, CLOCK.now() + 600)  # A means to look again in ten minutes
        assert not b.poller.poke(job.task_id)  # the callback reached B, which does not hold it
        await asyncio.sleep(0.2)  # B marks it due in the table
        owner = Claimer(a.poller.leases, a.poller, a.jobs.take_over, CLOCK)
        await owner.tick()  # A's next claim round (every second)
        assert tracked.due <= CLOCK.now() + 2.0


async def test_a_row_busy_when_its_lease_is_renewed_is_renewed_all_the_same(store: Store) -> None:
    """A write of ours holding the row (a progress flush) must not make the renewal skip it
    for good: its lease would run out while the worker is alive and well."""
    from bot.core.store import jobs_table

    (job,) = await _running_jobs(store, 1)
    leases = Leases(store, "A", CLOCK, 30)
    (mine,) = await leases.claim(5)
    before = (await store.get(job.id)).lease_until  # type: ignore[union-attr]
    await asyncio.sleep(0.05)

    async def busy() -> None:
        async with store.engine.begin() as conn:  # (SQLite: the store's lock serialises)
            await conn.execute(
                jobs_table.update().where(jobs_table.c.id == job.id).values(progress=10)
            )
            await asyncio.sleep(0.3)

    writer = asyncio.create_task(busy())
    await asyncio.sleep(0.05)
    assert await leases.renew() == []
    await writer
    after = (await store.get(job.id)).lease_until  # type: ignore[union-attr]
    assert after is not None and before is not None and after > before
    assert mine.owner == "A"
