"""The token bucket both throttles (API polls, Discord edits) are built on, on a manual clock."""

from __future__ import annotations

from bot.core.ratelimit import TokenBucket
from bot.testing.clock import ManualClock


async def test_a_full_bucket_spends_its_burst_then_refuses() -> None:
    clock = ManualClock()
    bucket = TokenBucket(clock, rate=2.0, burst=3.0)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


async def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst() -> None:
    clock = ManualClock()
    bucket = TokenBucket(clock, rate=2.0, burst=3.0)
    while bucket.take():
        pass
    assert bucket.wait() == 0.5
    await clock.advance(0.5)
    assert bucket.take() and not bucket.take()
    await clock.advance(3600.0)  # an hour idle earns the burst, not 7,200 tokens
    assert sum(bucket.take() for _ in range(10)) == 3


async def test_the_burst_defaults_to_one_second_of_rate_and_at_least_one() -> None:
    clock = ManualClock()
    assert TokenBucket(clock, rate=5.0).burst == 5.0
    assert TokenBucket(clock, rate=0.2).burst == 1.0


async def test_a_clock_stepping_back_earns_nothing() -> None:
    clock = ManualClock()
    bucket = TokenBucket(clock, rate=1.0, burst=1.0)
    assert bucket.take()
    assert bucket.refill(clock.now() - 100.0) == 0.0
    assert not bucket.take()
    await clock.advance(1.0)
    assert bucket.take()


async def test_drain_and_a_new_rate_take_effect_at_once() -> None:
    clock = ManualClock()
    bucket = TokenBucket(clock, rate=10.0, burst=10.0)
    bucket.drain()
    assert not bucket.take()
    bucket.rate = 1.0
    assert bucket.wait() == 1.0
    await clock.advance(0.5)
    assert not bucket.take()
    await clock.advance(0.5)
    assert bucket.take()
