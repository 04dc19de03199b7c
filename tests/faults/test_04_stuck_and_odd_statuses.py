"""Issue 8 item 4: undocumented statuses, a task stuck in `processing`, JOB_TIMEOUT."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot.core.apimart import TaskInfo
from bot.core.clock import SystemClock
from bot.core.config import Settings
from bot.core.job import NOTICES, JobState
from bot.core.poller import FixedSchedule, Poller, RateLimiter
from bot.core.request import build_request
from bot.core.store import Store
from bot.testing.notifier import RecordingNotifier


class StuckReader:
    """A task that answers an undocumented status for ever, with a short estimate."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.calls = 0

    async def get_task(self, task_id: str) -> TaskInfo:
        self.calls += 1
        return TaskInfo.from_api(
            {"id": task_id, "status": self.status, "progress": 50, "estimated_time": 0.2}
        )


async def test_an_odd_status_is_logged_once_flagged_slow_and_ends_at_the_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    notifier = RecordingNotifier()
    clock = SystemClock()
    reader = StuckReader("succeed")
    schedule = FixedSchedule(initial_delay=0.01, interval=0.02, max_interval=0.02)
    limiter = RateLimiter(clock, rate=1000.0)
    poller = Poller(reader, store, notifier, clock, schedule, limiter, max_age=1.0)
    runner = asyncio.create_task(poller.run())
    try:
        job = await store.create(build_request(model="sora-2", prompt="p"), now=clock.now())
        await store.update(job, state=JobState.RUNNING, task_id="task_1", submitted_at=clock.now())
        poller.track(job)
        finished = await notifier.wait_finished(job.id, timeout=5)
    finally:
        await poller.stop()
        await runner
        await store.close()
    assert reader.calls > 10  # treated as running, not as done or failed
    assert finished.state is JobState.UNKNOWN and finished.error_code == "not_followed"
    odd = [r for r in caplog.records if "undocumented status" in r.getMessage()]
    assert len(odd) == 1 and "succeed" in odd[0].getMessage()
    # Past the estimate, the requester saw "taking longer than usual" once, not every poll.
    slow = [n for _, n in notifier.notices if n == "slow"]
    assert len(slow) == 1 and NOTICES["slow"] == "taking longer than usual"


def test_job_timeout_is_a_setting_with_a_sensible_default() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert 1800 <= settings.JOB_TIMEOUT <= 6 * 3600
    assert Settings(_env_file=None, JOB_TIMEOUT=900).JOB_TIMEOUT == 900  # type: ignore[call-arg]
    env_example = (Path(__file__).parents[2] / ".env.example").read_text()
    assert "JOB_TIMEOUT" in env_example


def test_the_discord_status_says_taking_longer_than_usual(tmp_path: Any) -> None:
    from bot.core.job import Job
    from bot.discord import render

    job = Job(
        id=7,
        state=JobState.RUNNING,
        request=build_request(model="sora-2", prompt="p"),
        created_at=1.0,
        task_id="task_1",
        notice="slow",
    )
    embed = render.status(job, 100.0).embeds[0]
    assert "taking longer than usual" in (embed.description or "")
