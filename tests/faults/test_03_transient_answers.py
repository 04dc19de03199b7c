"""Issue 8 item 3: 404s, unreadable answers and 401/403 do not end a job for good."""

from __future__ import annotations

from typing import Any

import pytest

from bot.core.job import JobState
from bot.core.poller import REFUSAL_LIMIT
from bot.core.request import build_request
from bot.testing.fake_apimart import FakeApimart


@pytest.mark.parametrize(
    ("status", "body"),
    [(404, None), (401, None), (403, None), (200, "<html>proxy says hello</html>")],
    ids=["404", "401", "403", "unreadable"],
)
async def test_a_run_of_transient_answers_delays_the_job_but_it_still_completes(
    faulty_pipeline: Any, fake: FakeApimart, status: int, body: str | None
) -> None:
    async with faulty_pipeline() as p:
        job = await p.jobs.submit(build_request(model="sora-2", prompt="a fox"))
        assert job.task_id is not None
        fake.inject("task", status, body=body, times=12)  # more than any old limit
        fake.complete_now(job.task_id)
        done = await p.notifier.wait_finished(job.id, timeout=20)
        assert done.state is JobState.COMPLETED and done.video_urls
        # The requester was told the job was delayed while the answers were bad.
        notices = [notice for job_id, notice in p.notifier.notices if job_id == job.id]
        assert "delayed" in notices
    assert len(fake.submits) == 1 and p.notifier.finished_ids() == [job.id]
    assert REFUSAL_LIMIT < 12


async def test_resume_follows_an_unknown_job_with_a_task_id_again(
    faulty_pipeline: Any, fake: FakeApimart
) -> None:
    async with faulty_pipeline() as p:
        job = await p.jobs.submit(build_request(model="sora-2", prompt="a fox"))
        assert job.task_id is not None
        # What an older release (or a burst of refusals) left behind: unknown, but with an id.
        p.poller._untrack(p.poller.tracked(job.id))  # type: ignore[arg-type]
        await p.store.update(job, state=JobState.UNKNOWN, error_code="not_followed", delivered=True)
    fake.complete_now(job.task_id)
    async with faulty_pipeline() as p:
        done = await p.notifier.wait_finished(job.id, timeout=10)
        assert done.state is JobState.COMPLETED and done.video_urls
    assert len(fake.submits) == 1
