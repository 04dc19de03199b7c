"""Issue 8 item 10 (APIMart side): answers are read with a size cap and a depth cap."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import aiohttp
import pytest

from bot.core.apimart import (
    MAX_ANSWER_BYTES,
    ApimartClient,
    ApiUnreachable,
    ProtocolError,
    RetryPolicy,
    SubmitOutcomeUnknown,
)
from bot.core.job import JobState
from bot.core.request import build_request
from bot.testing.fake_apimart import FakeApimart
from tests.conftest import API_KEY

PAYLOAD = build_request(model="sora-2", prompt="a fox").to_payload()


@pytest.fixture
async def client(api_url: str) -> Any:
    async with aiohttp.ClientSession() as session:
        yield ApimartClient(session, api_url, API_KEY, timeout=10, retry=RetryPolicy(attempts=1))


async def test_a_huge_answer_is_refused_as_too_large_and_memory_stays_small(
    fake: FakeApimart, client: ApimartClient
) -> None:
    task_id = await client.submit(PAYLOAD)
    fake.inject("task", 200, huge=64 * MAX_ANSWER_BYTES)  # 64 MiB, streamed without a length
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="answer too large"):
            await client.get_task(task_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_ANSWER_BYTES


async def test_a_huge_submit_answer_is_an_unknown_outcome_not_a_crash(
    fake: FakeApimart, client: ApimartClient
) -> None:
    fake.inject("submit", 200, huge=8 * MAX_ANSWER_BYTES, accept=True)
    with pytest.raises(SubmitOutcomeUnknown):
        await client.submit(PAYLOAD)
    assert len(fake.submits) == 1


async def test_deeply_nested_json_is_a_protocol_error_not_a_recursion_error(
    fake: FakeApimart, client: ApimartClient
) -> None:
    task_id = await client.submit(PAYLOAD)
    fake.inject("task", 200, body="[" * 200_000 + "]" * 200_000)
    with pytest.raises(ProtocolError, match="nested too deeply"):
        await client.get_task(task_id)
    nested: Any = {"id": task_id, "status": "processing"}
    for _ in range(200):
        nested = {"x": nested}
    fake.inject("task", 200, body=json.dumps({"code": 200, "data": nested}))
    with pytest.raises(ProtocolError, match="nested too deeply"):
        await client.get_task(task_id)


async def test_a_truncated_answer_is_a_broken_connection(
    fake: FakeApimart, client: ApimartClient
) -> None:
    task_id = await client.submit(PAYLOAD)
    fake.inject("task", 200, truncate=True)
    with pytest.raises(ApiUnreachable):
        await client.get_task(task_id)


async def test_a_job_whose_answers_are_huge_keeps_being_followed(
    faulty_pipeline: Any, fake: FakeApimart
) -> None:
    async with faulty_pipeline() as p:
        job = await p.jobs.submit(build_request(model="sora-2", prompt="a fox"))
        assert job.task_id is not None
        fake.inject("task", 200, huge=4 * MAX_ANSWER_BYTES, times=4)
        fake.complete_now(job.task_id)
        done = await p.notifier.wait_finished(job.id, timeout=20)
        assert done.state is JobState.COMPLETED


@pytest.mark.parametrize(
    "times",
    [
        {"actual_time": 1e300, "created": -1e300, "completed": 1e308},
        {"actual_time": -50, "created": 1764500100, "completed": 1764500000},
        {"actual_time": None, "created": -1e300, "completed": 1e308},
    ],
)
async def test_absurd_run_times_are_unknown_not_printed(
    fake: FakeApimart, pipeline: Any, times: dict[str, Any]
) -> None:
    """An elapsed time of 300 digits (or -50 s) was printed by `generate` and stored: a run
    time the API cannot have meant is not believed; the job's own clock is used instead."""
    data = {
        "id": "task_x",
        "status": "completed",
        "progress": 100,
        "cost": 0.04,
        "result": {"videos": [{"url": ["https://example.com/v.mp4"]}]},
        **times,
    }
    fake.inject("task", 200, body=json.dumps({"code": 200, "data": data}), times=1000)
    job = await pipeline.jobs.submit(build_request(model="sora-2", prompt="a fox"))
    finished = await pipeline.notifier.wait_finished(job.id, timeout=10)
    assert finished.state is JobState.COMPLETED
    assert finished.elapsed is not None and 0 <= finished.elapsed < 60, finished.elapsed
