"""The adaptive schedule and the shared request budget, with time passed in by hand."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest

from bot.core.apimart import RateLimited, TaskInfo
from bot.core.job import Job, JobState
from bot.core.poller import Poller, RateLimiter, Tracked
from bot.core.request import build_request
from bot.core.schedule import MIN_SAMPLES, AdaptiveSchedule
from bot.testing.clock import ManualClock
from bot.testing.notifier import RecordingNotifier
from bot.testing.store import MemoryJobStore

T0 = 1_800_000_000.0
KEY = ("sora-2", 4, "720p")
REQUEST = build_request(model="sora-2", prompt="x", duration=4)


def tracked(
    started: float = T0, key: tuple[str, int | None, str] = KEY, job_id: int = 1
) -> Tracked:
    job = Job(
        id=job_id,
        state=JobState.RUNNING,
        request=REQUEST,
        created_at=started,
        task_id=f"task_{job_id}",
        submitted_at=started,
    )
    return Tracked(job=job, due=0.0, key=key, started=started)


def info(
    status: str = "processing",
    progress: int | None = 0,
    estimated_time: float | None = 600.0,
    actual_time: float | None = None,
) -> TaskInfo:
    return TaskInfo(
        task_id="task_1",
        status=status,
        progress=progress,
        estimated_time=estimated_time,
        actual_time=actual_time,
        created=None,
        completed=None,
        cost=None,
        credits_cost=None,
        video_urls=(),
        expires_at=None,
        error_code=None,
        error_message=None,
        raw={},
    )


def poll(schedule: AdaptiveSchedule, t: Tracked, elapsed: float, answer: TaskInfo) -> float:
    """Feed one answer at `elapsed` seconds after submit; return the interval to the next poll."""
    t.info = answer
    now = t.started + elapsed
    return schedule.next_due(t, answer, now) - now


def learn(schedule: AdaptiveSchedule, took: float, n: int = MIN_SAMPLES + 5, **kw: Any) -> None:
    """Finish `n` jobs of `KEY` that took `took` seconds, with progress read on the way."""
    for i in range(n):
        t = tracked(job_id=100 + i, **kw)
        for share in (0.2, 0.4, 0.6, 0.8, 0.9):
            poll(schedule, t, share * took, info(progress=int(share * 100)))
        schedule.finished(t, info("completed", 100, actual_time=took), t.started + took)


def test_first_poll_after_the_initial_delay() -> None:
    schedule = AdaptiveSchedule(initial_delay=7.0, min_interval=5.0, max_interval=60.0)
    t = tracked()
    assert schedule.first_due(t, T0) == T0 + 7.0
    # a resumed job submitted long ago is due at once, not in the past
    assert schedule.first_due(t, T0 + 1000) == T0 + 1000


def test_sparse_early_dense_near_the_estimated_end() -> None:
    schedule = AdaptiveSchedule(min_interval=5.0, max_interval=60.0)
    t = tracked()
    # Nothing learned yet; estimated_time 600 s is a loose upper bound (a 240 s job shows 600).
    # An early failure check (15 s after submit), then sparse.
    assert poll(schedule, t, 5, info(progress=0)) == 10.0
    assert poll(schedule, t, 15, info(progress=0)) == 60.0
    late = poll(schedule, t, 170, info(progress=0))
    assert late == 5.0


def test_progress_near_the_end_makes_polls_dense() -> None:
    schedule = AdaptiveSchedule(min_interval=5.0, max_interval=60.0)
    t = tracked()
    assert poll(schedule, t, 30, info(progress=5)) > 5.0
    poll(schedule, t, 100, info(progress=70))
    assert poll(schedule, t, 110, info(progress=95)) == 5.0


def test_intervals_stay_within_bounds() -> None:
    rng = random.Random(3)
    schedule = AdaptiveSchedule(initial_delay=5.0, min_interval=4.0, max_interval=45.0)
    learn(schedule, 200.0)
    for i in range(500):
        t = tracked(job_id=1000 + i)
        elapsed = 0.0
        progress = 0
        estimate = rng.choice([None, 60.0, 600.0, 3600.0])
        assert schedule.first_due(t, T0) - T0 == 5.0
        while elapsed < 2000:
            elapsed += rng.uniform(4, 45)
            progress = min(99, progress + rng.choice([0, 0, 1, 5, 20]))
            interval = poll(schedule, t, elapsed, info(progress=progress, estimated_time=estimate))
            assert 4.0 <= interval <= 45.0


def test_learning_moves_the_expected_end() -> None:
    fast, slow = AdaptiveSchedule(), AdaptiveSchedule()
    learn(fast, 90.0)
    learn(slow, 400.0)
    assert fast.expected_total(tracked()) == pytest.approx(90.0)
    assert slow.expected_total(tracked()) == pytest.approx(400.0)
    # A job 80 s in without progress: next poll lands on the end if such jobs take 90 s ...
    assert poll(fast, tracked(), 80, info(progress=0)) == 10.0
    # ... still far off if they take 400 s.
    assert poll(slow, tracked(), 80, info(progress=0)) == 60.0
    # other keys fall back to what was learned across all keys, then to the cold guess
    other = tracked(key=("veo3.1-fast-official", 8, "720p"))
    assert fast.expected_total(other) == pytest.approx(90.0)
    assert AdaptiveSchedule().expected_total(other) == 180.0


def test_failures_teach_nothing_about_durations() -> None:
    schedule = AdaptiveSchedule()
    for i in range(MIN_SAMPLES + 5):
        t = tracked(job_id=i)
        schedule.finished(t, info("failed", 10, actual_time=20.0), T0 + 20)
    assert schedule.expected_total(tracked()) == 180.0


def test_progress_rate_is_used() -> None:
    schedule = AdaptiveSchedule(min_interval=5.0, max_interval=60.0)
    slow, quick = tracked(job_id=1), tracked(job_id=2)
    # Same progress at the same time; one got there slowly (1/3 %/s), one quickly (4/3 %/s).
    poll(schedule, slow, 60, info(progress=50, estimated_time=None))
    poll(schedule, quick, 60, info(progress=20, estimated_time=None))
    slow_next = poll(schedule, slow, 90, info(progress=60, estimated_time=None))
    quick_next = poll(schedule, quick, 90, info(progress=60, estimated_time=None))
    assert slow_next > quick_next


def test_learned_progress_calibration_tightens_the_bound() -> None:
    cold, warm = AdaptiveSchedule(), AdaptiveSchedule()
    learn(warm, 300.0)  # progress p was always read at p% of the run
    # 120 s in at 40 %: learned jobs like this end near 300 s, so wait longer than cold.
    assert poll(warm, tracked(), 120, info(progress=40)) > poll(
        cold, tracked(), 120, info(progress=40)
    )


def test_webhook_mode_polls_only_as_a_safety_net() -> None:
    schedule = AdaptiveSchedule(min_interval=5.0, max_interval=60.0, webhook=True)
    t = tracked()
    t.info = None
    first = schedule.first_due(t, T0) - T0
    assert first >= 360.0  # no poll before the job is probably over
    learn(schedule, 200.0)
    assert 200.0 <= schedule.first_due(tracked(), T0) - T0 <= 260.0
    assert poll(schedule, t, 400, info(progress=50)) == 60.0


def test_overdue_jobs_back_off_slowly() -> None:
    schedule = AdaptiveSchedule(min_interval=5.0, max_interval=60.0)
    learn(schedule, 100.0)
    t = tracked()
    assert poll(schedule, t, 150, info(progress=99)) == 5.0
    assert 5.0 < poll(schedule, t, 2000, info(progress=99)) <= 60.0


async def test_429_slows_everyone_then_recovers() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, rate=10.0)
    # a burst of 429s (every request in flight, reported by client and poller) halves once
    for _ in range(16):
        limiter.penalize(2.0)
    assert limiter.rate == 5.0 and limiter.throttled == 16
    acquired: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        acquired.append(clock.now())

    tasks = [asyncio.create_task(one()) for _ in range(3)]
    await clock.advance(1.9)
    assert acquired == []  # everyone waits out Retry-After
    await clock.advance(3.0)
    await asyncio.gather(*tasks)
    assert all(t >= T0 + 2.0 for t in acquired)
    before = limiter.rate
    limiter.penalize()  # a new burst later: halve again
    assert limiter.rate == before / 2
    await clock.advance(20.0)
    await one()
    assert limiter.rate == 10.0  # quiet seconds win the full rate back


class _Throttled:
    """A task reader that answers 429 to the first `limit` calls."""

    def __init__(self, clock: ManualClock, limit: int) -> None:
        self.clock = clock
        self.limit = limit
        self.calls: list[tuple[str, float]] = []

    async def get_task(self, task_id: str) -> TaskInfo:
        self.calls.append((task_id, self.clock.now()))
        if len(self.calls) <= self.limit:
            raise RateLimited(retry_after=10.0)
        return info("completed", 100, actual_time=30.0)


async def test_a_429_on_one_job_delays_the_others() -> None:
    clock = ManualClock(T0)
    api = _Throttled(clock, limit=1)
    notifier = RecordingNotifier()
    limiter = RateLimiter(clock, rate=100.0)
    schedule = AdaptiveSchedule(initial_delay=5.0)
    poller = Poller(api, MemoryJobStore(), notifier, clock, schedule, limiter, concurrency=1)
    runner = asyncio.create_task(poller.run())
    for i in range(3):
        job = Job(i, JobState.RUNNING, REQUEST, T0, task_id=f"t{i}", submitted_at=T0 + i * 0.1)
        poller.track(job)
    for _ in range(60):
        await clock.advance(1.0)
    await poller.stop()
    await clock.advance(1.0)
    await runner
    assert sorted(notifier.finished_ids()) == [0, 1, 2]
    first, *others = api.calls
    assert first[1] == pytest.approx(T0 + 5.0)
    # the other jobs were due 0.1 s later but waited out the Retry-After together
    assert all(at >= T0 + 15.0 for _, at in others)


class _EndsAt:
    """Every task runs until `end` (clock time), then completes; records each poll."""

    def __init__(self, clock: ManualClock, end: float) -> None:
        self.clock = clock
        self.end = end
        self.calls: dict[str, list[float]] = {}

    async def get_task(self, task_id: str) -> TaskInfo:
        now = self.clock.now()
        self.calls.setdefault(task_id, []).append(now)
        if now >= self.end:
            return info("completed", 100, actual_time=self.end - T0)
        return info(progress=int(90 * (now - T0) / (self.end - T0)), estimated_time=None)


async def test_watched_jobs_are_polled_first_when_the_budget_is_short() -> None:
    """Issue 12: 60 equal jobs, 6 watched, 2 requests/s (each job wants one every 5 s near its
    end: the budget binds). The watched jobs learn of their end sooner; nobody waits past
    `max_interval` between polls."""
    clock = ManualClock(T0)
    api = _EndsAt(clock, end=T0 + 150.0)
    notifier = RecordingNotifier(clock=clock)
    schedule = AdaptiveSchedule(initial_delay=5.0, min_interval=5.0, max_interval=60.0)
    limiter = RateLimiter(clock, rate=2.0)
    poller = Poller(api, MemoryJobStore(), notifier, clock, schedule, limiter, concurrency=4)
    runner = asyncio.create_task(poller.run())
    watched = set(range(0, 60, 10))
    for i in range(60):
        if i in watched:
            poller.watch(i, float("inf"))  # before it is followed: the submit is on its way
        poller.track(Job(i, JobState.RUNNING, REQUEST, T0, task_id=f"t{i}", submitted_at=T0))
    for _ in range(400):
        await clock.advance(1.0)
        if len(notifier.finished) == 60:
            break
    await poller.stop()
    await clock.advance(1.0)
    await runner
    assert len(notifier.finished) == 60
    delay = {
        j.id: at - api.end for j, at in zip(notifier.finished, notifier.finished_at, strict=True)
    }
    seen = [delay[i] for i in sorted(watched)]
    unseen = [delay[i] for i in range(60) if i not in watched]
    assert max(seen) < sorted(unseen)[len(unseen) // 2]  # worst watched beats the median other
    assert sum(seen) / len(seen) < sum(unseen) / len(unseen) / 2
    for calls in api.calls.values():
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert max(gaps) <= 60.0 + 1.0  # POLL_MAX_INTERVAL holds for the unwatched too


def test_a_lookup_watches_a_job_for_a_while_only() -> None:
    """`/video jobs` watches for a few minutes: a sparse poll is not stretched meanwhile, and
    is stretched again (keyed by its latest acceptable time) once the watch is over."""
    schedule = AdaptiveSchedule(max_interval=60.0)
    t = tracked()
    t.polls = 3
    t.last_poll_at = T0 + 90
    t.extra["sparse"] = True
    assert schedule.priority(t, T0 + 100) == T0 + 150  # unwatched: stretched to its latest
    t.extra["watched_until"] = T0 + 300
    assert schedule.priority(t, T0 + 100) < T0 + 100  # watched: ahead of ordinary polls
    t.last_poll_at = T0 + 290
    assert schedule.priority(t, T0 + 301) == T0 + 350  # the watch is over
