"""Hostile finding R3: no pause outlasts the caller's deadline or a sane maximum.

`reelbot generate --timeout 8` ran 65 s against a stand-in answering 429 with
`Retry-After: 1e12`, and 95 s with `Retry-After: 30` (the client slept 30 s three times inside
one poll). Each pause is checked here on its own: the header's parsing, the client's retry
sleeps, the shared limiter's 429 pause, and the poller's wait at a job's deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr

from bot.core.apimart import MAX_RETRY_AFTER, ApimartClient, RateLimited, RetryPolicy, TaskInfo
from bot.core.deadline import deadline_in
from bot.core.job import Job, JobState
from bot.core.poller import FixedSchedule, Poller, RateLimiter
from bot.core.request import build_request
from bot.testing.clock import ManualClock
from bot.testing.fake_apimart import FakeApimart
from bot.testing.notifier import RecordingNotifier
from bot.testing.store import MemoryJobStore
from tests.test_apimart_client import ServerFactory, Sleeps

KEY = "sk-pause-deadline-test-key"
T0 = 1_800_000_000.0
#: What a broken or hostile server may put in Retry-After.
HOSTILE_RETRY_AFTER = [
    "1e12",
    "999999",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "-5",
    "nan",
    "inf",
    "-inf",
    "1" * 5000,
    "Mon, 99 Foo 0000 99:99:99 GMT",
    "soon",
]


@pytest.fixture
async def api(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[FakeApimart, ApimartClient]]:
    fake = FakeApimart(api_key=KEY)
    server = await aiohttp_server(fake.app)
    async with aiohttp.ClientSession() as session:
        client = ApimartClient(session, str(server.make_url("")), SecretStr(KEY), sleep=Sleeps())
        yield fake, client


def sleeps_of(client: ApimartClient) -> list[float]:
    sleeper = client._sleep
    assert isinstance(sleeper, Sleeps)
    return sleeper.delays


@pytest.mark.parametrize("header", HOSTILE_RETRY_AFTER)
async def test_a_hostile_retry_after_never_raises_anything_but_rate_limited(
    api: tuple[FakeApimart, ApimartClient], header: str
) -> None:
    fake, client = api
    fake.inject("balance", 429, retry_after=header, times=10)
    with pytest.raises(RateLimited) as caught:
        await client.balance()
    seen = caught.value.retry_after
    assert seen is None or 0.0 <= seen <= MAX_RETRY_AFTER
    # however many attempts, the sleeps of one call stay within the policy's maximum
    assert sum(sleeps_of(client)) <= RetryPolicy().max_retry_after


async def test_retry_waits_add_up_to_the_policys_maximum_at_most(
    api: tuple[FakeApimart, ApimartClient],
) -> None:
    fake, client = api
    fake.inject("balance", 429, retry_after=40, times=10)  # each one allowed, three are not
    with pytest.raises(RateLimited):
        await client.balance()
    assert sleeps_of(client) == [40.0]


async def test_no_retry_wait_ends_past_the_callers_deadline(
    api: tuple[FakeApimart, ApimartClient],
) -> None:
    fake, client = api
    fake.inject("balance", 429, retry_after=7, times=1)
    with deadline_in(5.0), pytest.raises(RateLimited):
        await client.balance()
    assert sleeps_of(client) == []  # raised at once: the caller ends the job its usual way
    fake.inject("balance", 429, retry_after=2, times=1)
    with deadline_in(5.0):
        await client.balance()  # a wait that fits is still waited
    assert sleeps_of(client) == [2.0]


async def test_an_inner_deadline_can_only_shorten_the_outer_one(
    api: tuple[FakeApimart, ApimartClient],
) -> None:
    fake, client = api
    fake.inject("balance", 429, retry_after=3, times=1)
    with deadline_in(1.0), deadline_in(100.0), pytest.raises(RateLimited):
        await client.balance()


@pytest.mark.parametrize("asked", [1e12, float("inf"), float("nan"), -5.0, 0.0, None])
def test_the_limiters_pause_is_capped_and_never_garbage(asked: float | None) -> None:
    clock = ManualClock(T0)
    limiter = RateLimiter(clock, rate=10.0, max_pause=20.0)
    limiter.penalize(asked)
    pause = limiter.paused_until - T0
    assert 0.0 < pause <= 20.0
    assert limiter.reserve() == pytest.approx(pause)  # the poller's wait for a token too


def test_another_workers_pause_is_capped_like_our_own() -> None:
    clock = ManualClock(T0)
    limiter = RateLimiter(clock, rate=10.0, max_pause=20.0)
    limiter.slow_down(T0 + 1e12, float("nan"))
    assert limiter.paused_until == T0 + 20.0 and limiter.rate > 0


class Always429:
    """Every poll is refused with a huge Retry-After; records when it was asked."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def get_task(self, task_id: str) -> TaskInfo:
        self.calls.append(self.clock.now())
        raise RateLimited(retry_after=1e12)


async def _follow(max_age: float, max_interval: float, run_for: float) -> tuple[Always429, list]:
    """One job under a 429 storm; returns the reader and the notifier's finished_at times."""
    clock = ManualClock(T0)
    reader = Always429(clock)
    notifier = RecordingNotifier(clock=clock)
    limiter = RateLimiter(clock, rate=10.0, max_pause=max_interval)
    schedule = FixedSchedule(initial_delay=1.0, interval=1.0, max_interval=max_interval)
    poller = Poller(reader, MemoryJobStore(), notifier, clock, schedule, limiter, max_age=max_age)
    runner = asyncio.create_task(poller.run())
    request = build_request(model="sora-2", prompt="p")
    poller.track(Job(1, JobState.RUNNING, request, T0, task_id="task_1", submitted_at=T0))
    for _ in range(int(run_for * 4)):
        await clock.advance(0.25)
    await poller.stop()
    await clock.advance(1.0)
    await runner
    assert len(notifier.finished) <= 1  # one final message, never two
    return reader, [at - T0 for at in notifier.finished_at]


async def test_a_deadline_passing_during_a_429_pause_ends_the_job_on_time() -> None:
    reader, finished_at = await _follow(max_age=8.0, max_interval=60.0, run_for=90.0)
    assert len(finished_at) == 1 and finished_at[0] <= 8.0 + 0.5  # not after the 60 s pause
    assert reader.calls  # it was asked, and refused


async def test_a_bot_job_under_429s_is_still_polled_within_the_max_interval() -> None:
    reader, finished_at = await _follow(max_age=7200.0, max_interval=20.0, run_for=200.0)
    assert finished_at == []  # still followed
    gaps = [b - a for a, b in zip(reader.calls, reader.calls[1:], strict=False)]
    assert len(reader.calls) >= 200 / 21 and max(gaps) <= 20.0 + 0.5
