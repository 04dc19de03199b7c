"""One Discord budget per channel: results first, progress edits dropped first, never over 5/5 s."""

from __future__ import annotations

import asyncio

import pytest

from bot.core.reroll import REROLL_GUARD_S, reroll_key
from bot.core.send_window import KEEP_SECONDS, SharedWindow, prune
from bot.core.store import Store
from bot.discord.channel_budget import SHARED_MAX_WAIT, ChannelBudget, Priority
from bot.testing.clock import ManualClock
from bot.testing.fake_discord.buckets import ChannelBuckets

CHANNEL = 42


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_results_go_before_final_edits_and_no_window_holds_more_than_five() -> None:
    clock = ManualClock(start=0.0)
    budget = ChannelBudget(clock, limit=5, per=5.0)
    sent: list[tuple[float, str]] = []

    async def request(name: str, priority: Priority) -> None:
        await budget.acquire(CHANNEL, priority)
        sent.append((clock.now(), name))

    # Twelve jobs end at once: their final status edits are asked for first, results after.
    tasks = [asyncio.create_task(request(f"final{i}", Priority.FINAL_STATUS)) for i in range(6)]
    await settle()
    tasks += [asyncio.create_task(request(f"result{i}", Priority.RESULT)) for i in range(6)]
    for _ in range(30):
        await clock.advance(1.0)
    await asyncio.gather(*tasks)
    names = [name for _, name in sent]
    # The first five edits took the free slots; after that every waiting result goes first.
    assert names[:5] == [f"final{i}" for i in range(5)]
    assert names[5:11] == [f"result{i}" for i in range(6)]
    assert names[11] == "final5"
    times = [t for t, _ in sent]
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 5.0) <= 5


async def test_progress_edits_are_dropped_while_slots_are_short() -> None:
    clock = ManualClock(start=0.0)
    budget = ChannelBudget(clock, limit=5, per=5.0, progress_reserve=2)
    assert [budget.try_progress(CHANNEL) for _ in range(5)] == [True, True, True, False, False]
    assert budget.dropped == 2
    # a result still finds a slot at once: progress left room for it
    await asyncio.wait_for(budget.acquire(CHANNEL, Priority.RESULT), 1)
    await clock.advance(5.0)
    assert budget.try_progress(CHANNEL)
    # while a result waits, progress never goes ahead of it
    for _ in range(4):
        await budget.acquire(CHANNEL, Priority.RESULT)
    waiting = asyncio.create_task(budget.acquire(CHANNEL, Priority.RESULT))
    await settle()
    assert not waiting.done()
    assert not budget.try_progress(CHANNEL)
    await clock.advance(5.0)
    await asyncio.wait_for(waiting, 1)


async def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    clock = ManualClock(start=0.0)
    budget = ChannelBudget(clock, limit=1, per=5.0)
    await budget.acquire(CHANNEL, Priority.RESULT)
    gone = asyncio.create_task(budget.acquire(CHANNEL, Priority.RESULT))
    kept = asyncio.create_task(budget.acquire(CHANNEL, Priority.FINAL_STATUS))
    await settle()
    gone.cancel()
    await clock.advance(5.0)
    await asyncio.wait_for(kept, 1)
    assert budget.free(CHANNEL) == 0


def test_fake_discord_bucket_answers_429_beyond_five_in_five_seconds() -> None:
    buckets = ChannelBuckets(5, 5.0)
    path = f"/channels/{CHANNEL}/messages"
    answers = [buckets.check("POST", path, at=100.0 + i * 0.1) for i in range(6)]
    assert answers[:5] == [None] * 5
    rejected = answers[5]
    assert rejected is not None and rejected.status == 429
    assert buckets.check("PATCH", f"{path}/7", at=105.05) is None  # the first slot is free
    assert buckets.check("GET", path, at=105.1) is None  # reads are not messages
    assert buckets.max_in_window(5.0) == 6  # every arrival counts, refused or not
    assert buckets.rejected == 1


# -- the shared window (several workers on PostgreSQL) ------------------------------------------


class Refusing:
    """A shared window that never has room (other workers flood the channel)."""

    def __init__(self) -> None:
        self.asked = 0

    async def take(self, key: int, *, keep_free: int = 0) -> float | None:
        self.asked += 1
        return 1.0


class Broken:
    """A shared window whose database is gone."""

    async def take(self, key: int, *, keep_free: int = 0) -> float | None:
        raise OSError("connection refused")


async def test_a_failing_shared_window_falls_back_to_the_local_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(start=0.0)
    budget = ChannelBudget(clock, limit=5, per=5.0, shared=Broken())  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.wait_for(budget.acquire(CHANNEL, Priority.RESULT), 1)
    assert await budget.confirm_progress(CHANNEL) is True
    sixth = asyncio.create_task(budget.acquire(CHANNEL, Priority.RESULT))
    await settle()
    assert not sixth.done()  # the local window still holds
    await clock.advance(5.0)
    await asyncio.wait_for(sixth, 1)
    warnings = [r for r in caplog.records if "shared Discord channel budget" in r.getMessage()]
    assert len(warnings) == 1  # one warning, not one per request


async def test_a_result_is_never_held_back_for_ever_by_the_shared_window() -> None:
    clock = ManualClock(start=0.0)
    shared = Refusing()
    budget = ChannelBudget(clock, limit=5, per=5.0, shared=shared)  # type: ignore[arg-type]
    waiting = asyncio.create_task(budget.acquire(CHANNEL, Priority.RESULT))
    await settle()
    assert not waiting.done()
    for _ in range(int(SHARED_MAX_WAIT) + 1):
        await clock.advance(1.0)
        await settle()
    await asyncio.wait_for(waiting, 1)
    assert shared.asked > 10
    assert not await budget.confirm_progress(CHANNEL)  # progress is dropped, never forced


async def test_the_shared_window_holds_across_workers(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        store = await Store.open(database_url)
        with pytest.raises(ValueError, match="PostgreSQL"):
            SharedWindow(store, ManualClock(), limit=5, per=5.0)
        await store.close()
        return
    store = await Store.open(database_url)
    clock = ManualClock(start=1_800_000_000.0)
    try:
        workers = [SharedWindow(store, clock, limit=5, per=5.0) for _ in range(2)]
        # Twelve requests from two workers at once: five get a slot.
        answers = await asyncio.gather(*(workers[n % 2].take(CHANNEL) for n in range(12)))
        assert sum(1 for a in answers if a is None) == 5
        assert all(a is None or 0 < a <= 5.0 for a in answers)
        await clock.advance(2.0)
        assert await workers[0].take(CHANNEL) == pytest.approx(3.0)
        await clock.advance(3.0)
        # A progress edit needs more than two free slots; five are free again.
        taken = [await workers[1].take(CHANNEL, keep_free=2) is None for _ in range(4)]
        assert taken == [True, True, True, False]
        assert await workers[0].take(CHANNEL + 1) is None  # another channel: its own window
        await clock.advance(KEEP_SECONDS + 1)
        assert await prune(store, older_than=clock.now() - KEEP_SECONDS) == 10
        assert await workers[0].take(CHANNEL) is None  # pruned rows are seeded again
    finally:
        await store.close()


async def test_one_re_roll_per_job_across_workers(database_url: str) -> None:
    """The Re-roll double-click guard across workers: one hold per job per guard window,
    given back when the re-roll did not start (a member refused for a cap may retry)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("several workers need PostgreSQL")
    store = await Store.open(database_url)
    clock = ManualClock(start=1_800_000_000.0)
    try:
        a, b = (SharedWindow(store, clock, limit=1, per=REROLL_GUARD_S) for _ in range(2))
        held = await asyncio.gather(a.take_at(reroll_key(7)), b.take_at(reroll_key(7)))
        assert sorted(h is None for h in held) == [False, True]  # two clicks: one hold
        assert await b.take_at(reroll_key(8)) is not None  # another job: its own
        taken_at = next(h for h in held if h is not None)
        await a.give_back(reroll_key(7), taken_at)  # that re-roll did not start
        assert await b.take_at(reroll_key(7)) is not None  # so the next click may
        assert await a.take_at(reroll_key(7)) is None
        await clock.advance(REROLL_GUARD_S)
        assert await a.take_at(reroll_key(7)) is not None  # the window passed
    finally:
        await store.close()
