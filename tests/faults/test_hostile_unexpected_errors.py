"""Hostile pass: an error the client does not classify must still end the job, once.

A key with a newline in it (a Docker `--env-file` keeps a Windows `\\r`) makes aiohttp refuse
the request with a ValueError. It escaped `JobService.launch`: the job stayed `submitting`,
nobody was told, and `reelbot generate` waited forever for an end that never came.
"""

from __future__ import annotations

import asyncio

import aiohttp

from bot.core.apimart import ApimartClient, RetryPolicy
from bot.core.job import JobState
from bot.core.jobs import ImageFile, with_pending_uploads
from bot.core.request import build_request
from bot.testing.fake_apimart import FakeApimart
from tests.conftest import Pipeline

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
BROKEN_KEY = "sk-hostile-abcdefgh\r\nX-Injected: 1"


async def test_an_unexpected_submit_error_ends_the_job_unknown_and_says_so(
    fake: FakeApimart, api_url: str, pipeline: Pipeline
) -> None:
    async with aiohttp.ClientSession() as session:
        pipeline.jobs.api = ApimartClient(
            session, api_url, BROKEN_KEY, timeout=2, retry=RetryPolicy(attempts=1)
        )
        async with asyncio.timeout(10):
            job = await pipeline.jobs.submit(build_request(model="sora-2", prompt="a fox"))
        told = await pipeline.notifier.wait_finished(job.id, timeout=5)
    assert told.state in (JobState.UNKNOWN, JobState.FAILED)
    stored = await pipeline.store.get(job.id)
    assert stored is not None and stored.state is told.state
    assert len(fake.submit_attempts) <= 1
    assert BROKEN_KEY not in (told.error_message or "")


async def test_an_unexpected_upload_error_fails_the_job_before_any_submit(
    fake: FakeApimart, api_url: str, pipeline: Pipeline
) -> None:
    refs, files = with_pending_uploads([ImageFile(PNG, "fox.png", "image/png")])
    request = build_request(model="sora-2", prompt="a fox", images=refs)
    async with aiohttp.ClientSession() as session:
        pipeline.jobs.api = ApimartClient(
            session, api_url, BROKEN_KEY, timeout=2, retry=RetryPolicy(attempts=1)
        )
        async with asyncio.timeout(10):
            job = await pipeline.jobs.submit(request, files)
        told = await pipeline.notifier.wait_finished(job.id, timeout=5)
    assert told.state is JobState.FAILED
    assert fake.submit_attempts == []
