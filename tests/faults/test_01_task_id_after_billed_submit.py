"""Issue 8 item 1: the task id of a billed submit survives a store that refuses to record it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.core import jobs as jobs_module
from bot.core.job import Job, JobState
from bot.core.request import build_request
from bot.testing.fake_apimart import FakeApimart


def _marks_running(job: Job, fields: dict[str, Any]) -> bool:
    """The write that records the task id after the submit (the one that must not be lost)."""
    return fields.get("state") is JobState.RUNNING


async def test_a_store_failing_after_the_submit_reports_unknown_with_the_task_id(
    faulty_pipeline: Any,
    fake: FakeApimart,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jobs_module, "RECORD_RETRY_DELAYS", (0.01, 0.01), raising=False)
    caplog.set_level(logging.INFO, logger="bot.core.jobs")
    async with faulty_pipeline(fail_when=_marks_running) as p:
        job = await p.jobs.submit(build_request(model="sora-2", prompt="a fox"))
        (task_id,) = fake.tasks  # billed once, never twice
        assert len(fake.submits) == 1
        assert job.state is JobState.UNKNOWN and job.task_id == task_id
        told = await p.notifier.wait_finished(job.id, timeout=5)
        assert task_id in (told.error_message or "") and told.outcome()["task_id"] == task_id
        assert p.store.failures == 3  # type: ignore[attr-defined]  # retried, bounded
        stored = await p.store.get(job.id)
        assert stored is not None and stored.task_id == task_id
    # The id was in the log the moment it was known, on one INFO line (not in a traceback).
    accepted = [r for r in caplog.records if r.levelno == logging.INFO and task_id in r.message]
    assert accepted and accepted[0].exc_info is None
    # The next start follows the task again and delivers the video it made.
    async with faulty_pipeline() as p:
        fake.complete_now(task_id)
        done = await p.notifier.wait_finished(job.id, timeout=5)
        assert done.state is JobState.COMPLETED and done.video_urls
    assert len(fake.submits) == 1
