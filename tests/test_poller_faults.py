"""The poller never drops a job: store errors, answers that never get better, endless tasks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.core.apimart import ApimartError, InvalidRequest, ProtocolError, TaskInfo
from bot.core.clock import SystemClock
from bot.core.job import Job, JobState
from bot.core.poller import (
    DELIVERY_ATTEMPTS,
    MAX_JOB_AGE,
    MAX_PAUSE,
    REFUSAL_LIMIT,
    FixedSchedule,
    Poller,
    RateLimiter,
)
from bot.core.request import build_request
from bot.core.store import Store
from bot.testing.clock import ManualClock
from bot.testing.notifier import RecordingNotifier

RUNNING = {"id": "task_1", "status": "processing", "progress": 40}
DONE = {
    "id": "task_1",
    "status": "completed",
    "progress": 100,
    "cost": 0.4,
    "result": {"videos": [{"url": ["https://cdn.example.com/v.mp4"]}]},
}


class ScriptedReader:
    """`get_task` answers from a script (dicts become TaskInfo, exceptions are raised);
    the last entry repeats."""

    def __init__(self, *script: dict[str, Any] | Exception) -> None:
        self.script = list(script)
        self.calls = 0

    async def get_task(self, task_id: str) -> TaskInfo:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(step, Exception):
            raise step
        return TaskInfo.from_api(step)


@dataclass
class Harness:
    store: Store
    notifier: RecordingNotifier
    poller: Poller
    reader: ScriptedReader

    async def running_job(self, *, started_ago: float = 0.0) -> Job:
        job = await self.store.create(build_request(model="sora-2", prompt="p"), now=1.0)
        now = SystemClock().now()
        await self.store.update(
            job, state=JobState.RUNNING, task_id="task_1", submitted_at=now - started_ago
        )
        self.poller.track(job)
        return job


@pytest.fixture
async def harness(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    reader = ScriptedReader(*request.param)
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    notifier = RecordingNotifier()
    clock = SystemClock()
    poller = Poller(
        reader,
        store,
        notifier,
        clock,
        FixedSchedule(initial_delay=0.01, interval=0.01, max_interval=0.02),
        RateLimiter(clock, rate=1000.0),
    )
    task = asyncio.create_task(poller.run())
    yield Harness(store, notifier, poller, reader)
    await poller.stop()
    await task
    await store.close()


@pytest.mark.parametrize("harness", [[RUNNING, DONE]], indirect=True)
async def test_a_store_error_while_recording_the_end_is_retried(harness: Harness) -> None:
    real_update = harness.store.update
    failures = []

    async def flaky_update(job: Job, **fields: Any) -> Job:
        if fields.get("state") is JobState.COMPLETED and not failures:
            failures.append(1)
            raise RuntimeError("database is locked")
        return await real_update(job, **fields)

    harness.store.update = flaky_update  # type: ignore[method-assign]
    job = await harness.running_job()
    finished = await harness.notifier.wait_finished(job.id, timeout=5)
    assert failures and finished.state is JobState.COMPLETED
    stored = await harness.store.get(job.id)
    assert stored is not None and stored.state is JobState.COMPLETED


@pytest.mark.parametrize(
    "harness",
    [[ApimartError("gone", status=410, error_type="invalid_request_error")]],
    indirect=True,
)
async def test_a_task_that_is_gone_ends_the_job(harness: Harness) -> None:
    job = await harness.running_job()
    finished = await harness.notifier.wait_finished(job.id, timeout=5)
    assert finished.state is JobState.FAILED and finished.error_code == "task_not_found"


@pytest.mark.parametrize(
    "harness",
    [[ProtocolError(api_message="the answer is not JSON")], [InvalidRequest(status=400)]],
    indirect=True,
)
async def test_answers_that_never_get_better_end_the_job_at_its_age_limit(
    harness: Harness,
) -> None:
    harness.poller.max_age = 0.5
    job = await harness.running_job()
    finished = await harness.notifier.wait_finished(job.id, timeout=10)
    assert finished.state is JobState.UNKNOWN
    assert "may still be billed" in (finished.error_message or "")
    assert harness.reader.calls > REFUSAL_LIMIT  # followed on, not dropped after a few
    assert job.id not in harness.poller


@pytest.mark.parametrize("harness", [[RUNNING]], indirect=True)
async def test_a_task_running_for_hours_is_given_up(harness: Harness) -> None:
    job = await harness.running_job(started_ago=MAX_JOB_AGE + 60)
    finished = await harness.notifier.wait_finished(job.id, timeout=5)
    assert finished.state is JobState.UNKNOWN and finished.error_code == "not_followed"


@pytest.mark.parametrize("harness", [[RUNNING]], indirect=True)
async def test_a_short_timeout_is_said_in_seconds(harness: Harness) -> None:
    """`generate --timeout 8` used to end with "after 0.133333 minutes"."""
    harness.poller.max_age = 8.0
    job = await harness.running_job(started_ago=9.0)
    finished = await harness.notifier.wait_finished(job.id, timeout=5)
    assert finished.error_code == "not_followed"
    assert "after 8 s." in (finished.error_message or ""), finished.error_message


@pytest.mark.parametrize(
    "harness", [[{**DONE, "result": {"videos": [{"urls": ["x"]}]}}]], indirect=True
)
async def test_completed_without_a_link_says_so(harness: Harness) -> None:
    job = await harness.running_job()
    finished = await harness.notifier.wait_finished(job.id, timeout=5)
    assert finished.state is JobState.COMPLETED and not finished.video_urls
    assert finished.error_code == "no_video_url"
    assert "sent no link" in (finished.error_message or "")


@pytest.mark.parametrize("harness", [[RUNNING]], indirect=True)
async def test_a_callback_that_beats_the_submit_answer_is_remembered(harness: Harness) -> None:
    harness.poller.schedule = FixedSchedule(initial_delay=3600, interval=3600)
    assert harness.poller.poke("task_1") is False  # not followed yet
    await harness.running_job()
    tracked = harness.poller.tracked(next(iter(harness.poller._tracked)))
    assert tracked is not None
    for _ in range(50):
        if harness.reader.calls:
            break
        await asyncio.sleep(0.01)
    assert harness.reader.calls >= 1  # polled at once, not after the hour-long first delay


def test_a_huge_retry_after_pauses_polls_for_a_minute_at_most() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock, rate=10.0)
    limiter.penalize(7200.0)
    assert limiter._paused_until - clock.now() == MAX_PAUSE


async def test_unreadable_rows_do_not_stop_the_others(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    good = await store.create(build_request(model="sora-2", prompt="p"), now=1.0)
    bad = await store.create(build_request(model="sora-2", prompt="p"), now=2.0)
    retired = await store.create(build_request(model="sora-2", prompt="p"), now=3.0)
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql(f"UPDATE jobs SET state = 'exploded' WHERE id = {bad.id}")
        await conn.exec_driver_sql(
            "UPDATE jobs SET request = json_set(request, '$.model', 'sora-1'), model = 'sora-1' "
            f"WHERE id = {retired.id}"
        )
    try:
        ids = [job.id for job in await store.unfinished()]
        assert ids == [good.id, retired.id]  # a retired model still resumes; garbage is skipped
        assert [j.id for j in await store.recent()] == [retired.id, good.id]
    finally:
        await store.close()


async def test_a_delivery_that_keeps_failing_is_parked_after_its_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every retry loop is bounded: a channel that refuses every post is tried
    DELIVERY_ATTEMPTS times (about 1.5 hours of doubling waits), then left undelivered
    for the next start, still in the shutdown hand-over."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    clock = ManualClock()
    tried_at: list[float] = []

    class RefusingChannel(RecordingNotifier):
        async def job_finished(self, job: Job) -> None:
            tried_at.append(clock.now())
            raise RuntimeError("403 Missing Access")

    notifier = RefusingChannel()
    poller = Poller(
        ScriptedReader(DONE), store, notifier, clock, FixedSchedule(), RateLimiter(clock, 10.0)
    )
    job = await store.create(build_request(model="sora-2", prompt="p"), now=clock.now())
    job = await store.update(job, state=JobState.COMPLETED, task_id="task_1")
    await poller.deliver(job)
    await clock.advance(24 * 3600.0)
    assert len(tried_at) == DELIVERY_ATTEMPTS
    assert tried_at[-1] - tried_at[0] > 3600  # an outage of an hour is outlived
    assert max(b - a for a, b in itertools.pairwise(tried_at)) <= 300
    assert [j.id for j in poller.delivery_pending()] == [job.id]
    stored = await store.get(job.id)
    assert stored is not None and not stored.delivered
    assert f"not delivered after {DELIVERY_ATTEMPTS} attempts" in caplog.text
    await store.close()
