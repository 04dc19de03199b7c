"""The job pipeline against the stand-in API over real HTTP: what a requester would notice."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.core.job import JobState
from bot.core.jobs import ImageFile, Origin, with_pending_uploads
from bot.core.request import build_request
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan
from tests.conftest import Pipeline

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def _until_delivered(pipeline: Pipeline, job_id: int) -> None:
    """The store records delivery just after the notifier returns."""
    async with asyncio.timeout(5):
        while not ((job := await pipeline.store.get(job_id)) and job.delivered):
            await asyncio.sleep(0.01)


async def test_happy_path_posts_one_result_with_cost(pipeline: Pipeline, fake: FakeApimart) -> None:
    request = build_request(model="sora-2", prompt="a red fox in snow", duration=4)
    job = await pipeline.jobs.submit(request, origin=Origin(kind="test"), requester="42")
    assert job.state is JobState.RUNNING and job.task_id

    done = await pipeline.notifier.wait_finished(job.id)
    await _until_delivered(pipeline, job.id)
    assert done.state is JobState.COMPLETED
    assert done.video_urls and done.video_urls[0].startswith("http")
    assert done.cost and done.cost > 0
    assert done.expires_at
    stored = await pipeline.store.get(job.id)
    assert stored is not None and stored.delivered and stored.state is JobState.COMPLETED
    assert stored.cost == done.cost
    assert fake.submits == [{"model": "sora-2", "prompt": "a red fox in snow", "duration": 4}]
    assert pipeline.notifier.finished_ids() == [job.id]
    assert len(pipeline.poller) == 0


async def test_submit_timeout_is_unknown_and_never_resubmitted(
    make_pipeline: Any, fake: FakeApimart
) -> None:
    fake.inject("submit", 200, delay=1.0, accept=True)  # the server bills it, the answer is late
    async with make_pipeline(timeout=0.3) as pipeline:
        job = await pipeline.jobs.submit(build_request(model="sora-2", prompt="x"))
        assert job.state is JobState.UNKNOWN
        finished = await pipeline.notifier.wait_finished(job.id)
        assert "not sent again" in (finished.error_message or "")
    async with make_pipeline() as restarted:
        await asyncio.sleep(0.2)
        assert restarted.notifier.finished == []  # already delivered: not posted twice
    assert len(fake.submit_attempts) == 1


async def test_server_error_on_submit_is_unknown(pipeline: Pipeline, fake: FakeApimart) -> None:
    fake.inject("submit", 502, error_type="bad_gateway")
    job = await pipeline.jobs.submit(build_request(model="sora-2", prompt="x"))
    assert job.state is JobState.UNKNOWN
    assert len(fake.submit_attempts) == 1


async def test_payment_required_fails_clearly_and_costs_nothing(
    pipeline: Pipeline, fake: FakeApimart
) -> None:
    fake.inject("submit", 402, error_type="payment_required")
    job = await pipeline.jobs.submit(build_request(model="sora-2", prompt="x"))
    finished = await pipeline.notifier.wait_finished(job.id)
    assert finished.state is JobState.FAILED
    assert "balance" in (finished.error_message or "")
    assert finished.cost == 0 and finished.charged is False
    assert len(pipeline.poller) == 0


async def test_invalid_request_from_api_shows_its_reason(
    pipeline: Pipeline, fake: FakeApimart
) -> None:
    fake.inject("submit", 400, error_type="invalid_duration", body=None)
    job = await pipeline.jobs.submit(build_request(model="sora-2", prompt="x"))
    finished = await pipeline.notifier.wait_finished(job.id)
    assert finished.state is JobState.FAILED
    assert finished.error_message and finished.error_message.startswith("APIMart refused")


async def test_429_then_success_on_submit(pipeline: Pipeline, fake: FakeApimart) -> None:
    fake.inject("submit", 429, error_type="rate_limit_error", retry_after=0.01)
    job = await pipeline.jobs.submit(build_request(model="sora-2", prompt="x"))
    assert job.state is JobState.RUNNING
    assert len(fake.submits) == 1
    await pipeline.notifier.wait_finished(job.id)


async def test_poll_faults_are_retried(pipeline: Pipeline, fake: FakeApimart) -> None:
    fake.inject("task", 503, error_type="server_error", times=4)
    fake.inject("task", 200, body=b"<html>not json</html>")
    fake.inject("task", 429, error_type="rate_limit_error", times=2)
    job = await pipeline.jobs.submit(build_request(model="Omni-Flash-Ext", prompt="x"))
    finished = await pipeline.notifier.wait_finished(job.id)
    assert finished.state is JobState.COMPLETED
    assert len(fake.submits) == 1


async def test_failed_task_is_reported_not_charged(pipeline: Pipeline, fake: FakeApimart) -> None:
    fake.plan_next(FakeTaskPlan(fail=True, error_message="content moderation"))
    job = await pipeline.jobs.submit(build_request(model="sora-2", prompt="x"))
    finished = await pipeline.notifier.wait_finished(job.id)
    assert finished.state is JobState.FAILED
    assert finished.error_message == "content moderation"
    assert finished.charged is False


async def test_local_image_is_uploaded_and_its_url_submitted(
    pipeline: Pipeline, fake: FakeApimart
) -> None:
    refs, files = with_pending_uploads([ImageFile(PNG, "fox.png", "image/png")])
    request = build_request(model="sora-2", prompt="x", images=refs)
    job = await pipeline.jobs.submit(request, files)
    assert len(fake.uploads) == 1
    url = fake.submits[0]["image_urls"][0]
    assert url.startswith("http") and "uploads" in url
    stored = await pipeline.store.get(job.id)
    assert stored is not None and stored.request.images == (url,)


async def test_restart_resumes_running_job_and_delivers_once(
    make_pipeline: Any, fake: FakeApimart
) -> None:
    fake.plan_next(FakeTaskPlan(duration_s=600))  # 0.6 s real: still running at the "crash"
    async with make_pipeline() as first:
        job = await first.jobs.submit(build_request(model="sora-2", prompt="x"))
    assert first.notifier.finished == []
    async with make_pipeline() as second:
        finished = await second.notifier.wait_finished(job.id)
        assert finished.state is JobState.COMPLETED
    async with make_pipeline() as third:
        await asyncio.sleep(0.1)
        assert third.notifier.finished == []
    assert len(fake.submit_attempts) == 1


async def test_restart_settles_half_done_jobs(make_pipeline: Any, fake: FakeApimart) -> None:
    async with make_pipeline(resume=False) as first:
        created = await first.jobs.create(build_request(model="sora-2", prompt="never sent"))
        submitting = await first.jobs.create(build_request(model="sora-2", prompt="maybe sent"))
        await first.store.update(submitting, state=JobState.SUBMITTING)
    async with make_pipeline() as second:
        a = await second.notifier.wait_finished(created.id)
        b = await second.notifier.wait_finished(submitting.id)
    assert a.state is JobState.FAILED and a.charged is False
    assert b.state is JobState.UNKNOWN
    assert fake.submit_attempts == []


async def test_failed_delivery_is_retried(pipeline: Pipeline, fake: FakeApimart) -> None:
    pipeline.notifier.fail_deliveries = 1
    job = await pipeline.jobs.submit(build_request(model="sora-2", prompt="x"))
    await asyncio.sleep(0.5)
    stored = await pipeline.store.get(job.id)
    assert stored is not None and stored.state is JobState.COMPLETED and not stored.delivered
    # the retry comes after 5 s; a restart would also redeliver: both end in one delivery
    pipeline.poller.spawn(pipeline.poller.deliver(stored))
    delivered = await pipeline.notifier.wait_finished(job.id)
    assert delivered.id == job.id


async def test_many_jobs_share_one_loop(pipeline: Pipeline, fake: FakeApimart) -> None:
    jobs = [
        await pipeline.jobs.submit(build_request(model="sora-2", prompt=f"clip {i}"))
        for i in range(30)
    ]
    finished = await asyncio.gather(*(pipeline.notifier.wait_finished(j.id) for j in jobs))
    assert {j.state for j in finished} == {JobState.COMPLETED}
    assert sorted(pipeline.notifier.finished_ids()) == sorted(j.id for j in jobs)
