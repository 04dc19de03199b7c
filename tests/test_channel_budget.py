"""One Discord budget per channel: results first, progress edits dropped first, never over 5/5 s."""

from __future__ import annotations

import asyncio

from bot.discord.channel_budget import ChannelBudget, Priority
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
