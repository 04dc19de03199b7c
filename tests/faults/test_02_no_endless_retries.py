"""Issue 8 item 2: errors of our own during polls count toward the job's bounds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.core.apimart import TaskInfo
from bot.core.clock import SystemClock
from bot.core.job import Job, JobState
from bot.core.poller import ERROR_LIMIT, FixedSchedule, Poller, RateLimiter
from bot.core.request import build_request
from bot.core.store import Store
from bot.testing.fake_apimart import FakeApimart
from bot.testing.notifier import RecordingNotifier


class BrokenReader:
    """An answer that breaks our own handling (what a deeply nested answer once did)."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_task(self, task_id: str) -> TaskInfo:
        self.calls += 1
        raise RecursionError("maximum recursion depth exceeded")


async def test_a_poll_that_keeps_crashing_ends_the_job_once_with_one_traceback(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    notifier = RecordingNotifier()
    clock = SystemClock()
    reader = BrokenReader()
    schedule = FixedSchedule(initial_delay=0.01, interval=0.01, max_interval=0.01)
    poller = Poller(reader, store, notifier, clock, schedule, RateLimiter(clock, rate=1000.0))
    runner = asyncio.create_task(poller.run())
    try:
        job = await store.create(build_request(model="sora-2", prompt="p"), now=clock.now())
        await store.update(job, state=JobState.RUNNING, task_id="task_1", submitted_at=clock.now())
        poller.track(job)
        finished = await notifier.wait_finished(job.id, timeout=5)
        assert finished.state is JobState.UNKNOWN and "task_1" in (finished.error_message or "")
        assert reader.calls == ERROR_LIMIT and job.id not in poller
        await asyncio.sleep(0.1)
        assert reader.calls == ERROR_LIMIT  # no longer polled
        stored = await store.get(job.id)
        assert stored is not None and stored.state is JobState.UNKNOWN
    finally:
        await poller.stop()
        await runner
        await store.close()
    tracebacks = [r for r in caplog.records if r.exc_info and r.name == "bot.core.poller"]
    assert len(tracebacks) == 1  # logged once; then one line per error


async def test_a_result_the_store_cannot_record_still_reaches_the_requester(
    faulty_pipeline: Any, fake: FakeApimart
) -> None:
    def every_end(job: Job, fields: dict[str, Any]) -> bool:
        return fields.get("state") in {JobState.COMPLETED, JobState.UNKNOWN}

    async with faulty_pipeline(fail_when=every_end) as p:
        job = await p.jobs.submit(build_request(model="sora-2", prompt="a fox"))
        assert job.task_id is not None
        fake.complete_now(job.task_id)
        told = await p.notifier.wait_finished(job.id, timeout=10)
        assert told.state is JobState.COMPLETED and told.video_urls  # from memory
        assert job.id not in p.poller
        assert p.store.failures == ERROR_LIMIT  # type: ignore[attr-defined]  # bounded
    assert len(fake.submits) == 1 and p.notifier.finished_ids() == [job.id]
