"""Under load (issue 12): what the budget buys, restarts, bounded deliveries, webhook health.

Logic, not timings: simulated time (`ManualClock`) and the real `Poller`; how fast it all is
lives in bench/load.py.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest

from bot.core.apimart import TaskInfo
from bot.core.job import Job, JobState
from bot.core.poller import DELIVERY_CONCURRENCY, Poller, RateLimiter, Tracked
from bot.core.request import build_request
from bot.core.schedule import FIRST_POLL_LEAD, MIN_SAMPLES, AdaptiveSchedule
from bot.core.webhook_health import MIN_MISSES, WebhookHealth
from bot.testing.clock import ManualClock
from bot.testing.notifier import RecordingNotifier
from bot.testing.store import MemoryJobStore

REQUEST = build_request(model="sora-2", prompt="x", duration=4)
KEY = ("sora-2", 4, "720p")


def answer(task_id: str, status: str = "processing", progress: int = 0) -> TaskInfo:
    return TaskInfo(
        task_id=task_id,
        status=status,
        progress=progress,
        estimated_time=600.0,
        actual_time=None,
        created=None,
        completed=None,
        cost=None,
        credits_cost=None,
        video_urls=("https://cdn.example/v.mp4",) if status == "completed" else (),
        expires_at=None,
        error_code=None,
        error_message=None,
        raw={},
    )


class Recorder:
    """A `TaskReader` that notes the order (and time) of polls; tasks never end."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.polls: list[tuple[float, str]] = []

    async def get_task(self, task_id: str) -> TaskInfo:
        self.polls.append((self.clock.now(), task_id))
        return answer(task_id)

    def first(self, task_id: str) -> float:
        return next(t for t, tid in self.polls if tid == task_id)

    def times(self, task_id: str) -> list[float]:
        return [t for t, tid in self.polls if tid == task_id]


def job(job_id: int, submitted: float, progress: int = 0) -> Job:
    return Job(
        id=job_id,
        state=JobState.RUNNING,
        request=REQUEST,
        created_at=submitted,
        task_id=f"task_{job_id}",
        submitted_at=submitted,
        progress=progress,
    )


def learned(schedule: AdaptiveSchedule, took: float) -> AdaptiveSchedule:
    """Teach the schedule that jobs of `KEY` take `took` seconds."""
    for i in range(MIN_SAMPLES + 5):
        t = Tracked(job=job(900 + i, 0.0), due=0.0, key=KEY, started=0.0)
        schedule.finished(t, answer(f"task_{900 + i}", "completed", 100), took)
    return schedule


async def running(poller: Poller) -> asyncio.Task[None]:
    task = asyncio.create_task(poller.run())
    await asyncio.sleep(0)
    return task


async def stop(poller: Poller, task: asyncio.Task[None], clock: ManualClock) -> None:
    await poller.stop()
    await clock.advance(10)
    await task


# -- schedule by value under a budget ------------------------------------------------------


def test_priority_order_first_look_then_near_end_then_sparse() -> None:
    schedule = learned(AdaptiveSchedule(min_interval=4.5, max_interval=60.0), 200.0)
    now = 1000.0
    new = Tracked(job=job(1, now - 5), due=0.0, key=KEY, started=now - 5)
    near = Tracked(job=job(2, now - 197), due=0.0, key=KEY, started=now - 197)
    sparse = Tracked(job=job(3, now - 30), due=0.0, key=KEY, started=now - 30)
    for t in (near, sparse):
        t.polls, t.last_poll_at = 3, now
        schedule.next_due(t, answer("x"), now)
    # The sparse job is due *earlier* than the near-end one, yet goes after it when tokens
    # are short: its key is its latest acceptable time, `max_interval` after its last poll.
    assert schedule.priority(new, now) == now - FIRST_POLL_LEAD
    assert schedule.priority(near, now + 5) == now + 5
    assert schedule.priority(sparse, now + 2) == now + 60.0
    # A webhook hint jumps the line (once).
    sparse.extra["urgent"] = True
    assert schedule.priority(sparse, now + 2) == now + 2 - FIRST_POLL_LEAD
    assert schedule.priority(sparse, now + 2) == now + 60.0


async def test_a_new_jobs_first_poll_is_not_queued_behind_a_restart_backlog() -> None:
    clock = ManualClock(start=10_000.0)
    api = Recorder(clock)
    limiter = RateLimiter(clock, 2.0, burst=1.0)  # 2 polls a second: the backlog takes 100 s
    schedule = AdaptiveSchedule(initial_delay=5.0, min_interval=4.5, max_interval=60.0)
    poller = Poller(api, MemoryJobStore(), RecordingNotifier(), clock, schedule, limiter)
    task = await running(poller)
    for i in range(200):  # running for 5 minutes before the restart: all due at once
        poller.track(job(i, clock.now() - 300))
    await clock.advance(1.0)
    poller.track(job(999, clock.now()))  # a member's new job
    submitted = clock.now()
    await clock.advance(10.0)
    assert api.first("task_999") - submitted <= 5.0 + 1.0
    assert len(api.polls) < 40  # the backlog was still being worked through
    await stop(poller, task, clock)


async def test_every_job_is_still_checked_within_the_max_interval_when_tokens_are_short() -> None:
    clock = ManualClock(start=10_000.0)
    api = Recorder(clock)
    limiter = RateLimiter(clock, 3.0, burst=1.0)
    schedule = learned(AdaptiveSchedule(initial_delay=5.0, min_interval=4.5, max_interval=30.0), 60)
    poller = Poller(api, MemoryJobStore(), RecordingNotifier(), clock, schedule, limiter)
    task = await running(poller)
    # 20 jobs past their expected end want a poll every 4.5 s (4.4/s: more than the budget)
    # while 30 young ones of another kind are far from theirs: sparse, max 30 s apart.
    for i in range(20):
        poller.track(job(i, clock.now() - 70))
    young = build_request(model="veo3.1-fast-official", prompt="x", duration=8)
    for i in range(100, 130):
        poller.track(
            Job(
                id=i,
                state=JobState.RUNNING,
                request=young,
                created_at=clock.now(),
                task_id=f"task_{i}",
                submitted_at=clock.now(),
            )
        )
    for _ in range(240):
        await clock.advance(1.0)
    for i in range(100, 130):
        times = api.times(f"task_{i}")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 5
        assert max(gaps) <= 30.0 + 1.0, (i, gaps)
    await stop(poller, task, clock)


# -- herd-free resume ----------------------------------------------------------------------


def test_resumed_jobs_are_spread_by_their_expected_end() -> None:
    schedule = learned(
        AdaptiveSchedule(initial_delay=5.0, min_interval=4.5, max_interval=60.0), 200
    )
    now = 5000.0
    firsts = []
    for age in (20, 100, 150, 180, 230):
        t = Tracked(job=job(age, now - age), due=0.0, key=KEY, started=now - age)
        firsts.append(schedule.first_due(t, now) - now)
    # Young jobs wait (up to POLL_MAX_INTERVAL) for their expected end; old ones are due now.
    assert firsts == [60.0, 60.0, 50.0, 20.0, 0.0]
    # A job that was only just submitted keeps the normal first look.
    fresh = Tracked(job=job(1, now - 1), due=0.0, key=KEY, started=now - 1)
    assert schedule.first_due(fresh, now) == now - 1 + 5.0


# -- bounded deliveries --------------------------------------------------------------------


class SlowNotifier(RecordingNotifier):
    def __init__(self) -> None:
        super().__init__()
        self.now_running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def job_finished(self, job: Job) -> None:
        self.now_running += 1
        self.most = max(self.most, self.now_running)
        try:
            await self.release.wait()
        finally:
            self.now_running -= 1
        await super().job_finished(job)


async def test_deliveries_after_a_restart_run_a_few_at_a_time() -> None:
    clock = ManualClock()
    notifier = SlowNotifier()
    store = MemoryJobStore()
    poller = Poller(
        Recorder(clock), store, notifier, clock, AdaptiveSchedule(), RateLimiter(clock, 20.0)
    )
    for i in range(50):
        finished = job(i, clock.now())
        finished.state = JobState.COMPLETED
        poller.spawn(poller.deliver(finished))
    for _ in range(20):
        await asyncio.sleep(0)
    assert notifier.most == DELIVERY_CONCURRENCY
    notifier.release.set()
    await notifier.wait_count(50, timeout=5)
    assert notifier.most == DELIVERY_CONCURRENCY


# -- webhook health ------------------------------------------------------------------------


class Switchable:
    webhook = True


def finished_job(hinted: bool) -> Tracked:
    t = Tracked(job=job(1, 0.0), due=0.0, key=KEY, started=0.0)
    if hinted:
        t.extra["hinted"] = True
    return t


def test_silent_webhook_is_reported_once_and_polling_falls_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schedule = Switchable()
    changes: list[bool] = []
    health = WebhookHealth(schedule, on_change=changes.append)
    done = answer("x", "completed", 100)
    with caplog.at_level(logging.WARNING, logger="bot.core.webhook_health"):
        for _ in range(MIN_MISSES - 1):
            health.observe(finished_job(False), done, 0.0)
        assert health.healthy and schedule.webhook  # a miss or two happen to healthy ones
        for _ in range(20):
            health.observe(finished_job(False), done, 0.0)
    warnings = [r for r in caplog.records if "WEBHOOK_PUBLIC_URL" in r.getMessage()]
    assert len(warnings) == 1
    assert not health.healthy and schedule.webhook is False and changes == [False]
    # Callbacks arriving again restore the safety-net mode.
    for _ in range(20):
        health.observe(finished_job(True), done, 0.0)
    assert health.healthy and schedule.webhook is True and changes == [False, True]


def test_callbacks_arriving_keep_the_webhook_healthy() -> None:
    schedule = Switchable()
    health = WebhookHealth(schedule)
    done = answer("x", "completed", 100)
    for i in range(100):  # 1 in 10 found by a poll first: normal
        health.observe(finished_job(i % 10 != 0), done, 0.0)
    assert health.healthy and schedule.webhook


async def test_poller_tells_health_whether_a_callback_announced_the_end() -> None:
    clock = ManualClock()

    class Ends:
        async def get_task(self, task_id: str) -> TaskInfo:
            return answer(task_id, "completed", 100)

    schedule = AdaptiveSchedule(webhook=True)
    notifier = RecordingNotifier()
    poller = Poller(Ends(), MemoryJobStore(), notifier, clock, schedule, RateLimiter(clock, 50))
    seen: list[Any] = []
    poller.on_finished.append(lambda t, info, now: seen.append(bool(t.extra.get("hinted"))))
    task = await running(poller)
    poller.track(job(1, clock.now()))
    poller.track(job(2, clock.now()))
    await clock.advance(1.0)
    assert poller.poke("task_1")
    await clock.advance(2.0)
    await clock.advance(1000.0)  # job 2: found by the safety-net poll
    await notifier.wait_count(2, timeout=5)
    assert seen == [True, False]
    await stop(poller, task, clock)


async def test_a_flood_of_hints_for_a_waiting_job_does_not_grow_the_line() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, 1.0, burst=1.0)
    poller = Poller(
        Recorder(clock), MemoryJobStore(), RecordingNotifier(), clock, AdaptiveSchedule(), limiter
    )
    for i in range(3):
        poller.track(job(i, clock.now() - 300))
    poller._start_due(clock.now())  # one polled, two wait for tokens
    waiting = len(poller._ready)
    for _ in range(10_000):
        poller.poke("task_2")
    assert len(poller._ready) <= waiting + 1
