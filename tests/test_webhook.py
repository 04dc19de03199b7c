"""The webhook over real HTTP: the stand-in APIMart calls back; the poll decides."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bot.core.apimart import ApimartClient, RetryPolicy
from bot.core.clock import SystemClock
from bot.core.job import JobState
from bot.core.jobs import JobService
from bot.core.poller import FixedSchedule, Poller, RateLimiter
from bot.core.request import build_request
from bot.core.store import Store
from bot.core.webhook import MAX_BODY, WebhookServer, task_id_of
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan
from bot.testing.notifier import RecordingNotifier
from tests.conftest import API_KEY


@dataclass
class Hooked:
    jobs: JobService
    poller: Poller
    notifier: RecordingNotifier
    server: WebhookServer
    url: str
    http: aiohttp.ClientSession

    def polls(self, fake: FakeApimart) -> int:
        return sum(1 for method, path in fake.requests if path.startswith("/v1/tasks/"))

    async def post(self, body: Any = None, *, data: bytes | None = None) -> int:
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        async with self.http.post(f"{self.url}/callback", **kwargs) as resp:
            await resp.read()
            return resp.status


@pytest.fixture
async def hooked(api_url: str, aiohttp_server: Any, tmp_path: Any) -> AsyncIterator[Hooked]:
    """A pipeline whose polls are a 1-minute safety net: anything quicker is the webhook."""
    async with aiohttp.ClientSession() as session:
        clock = SystemClock()
        api = ApimartClient(
            session, api_url, API_KEY, retry=RetryPolicy(attempts=2, base_delay=0.01)
        )
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
        notifier = RecordingNotifier()
        schedule = FixedSchedule(initial_delay=60.0, interval=60.0)
        poller = Poller(api, store, notifier, clock, schedule, RateLimiter(clock, 500.0))
        server = WebhookServer(poller)
        listening = await aiohttp_server(server.app)
        url = str(listening.make_url("")).rstrip("/")
        jobs = JobService(
            store=store, api=api, poller=poller, notifier=notifier, clock=clock, webhook_url=url
        )
        task = asyncio.create_task(poller.run())
        try:
            yield Hooked(jobs, poller, notifier, server, url, session)
        finally:
            await poller.stop()
            await task
            await store.close()


async def test_callback_polls_at_once_and_delivers(hooked: Hooked, fake: FakeApimart) -> None:
    started = time.monotonic()
    job = await hooked.jobs.submit(build_request(model="sora-2", prompt="a fox"))
    assert fake.submits[0]["webhook"] == hooked.url
    done = await hooked.notifier.wait_finished(job.id, timeout=5.0)
    assert done.state is JobState.COMPLETED and done.video_urls
    assert time.monotonic() - started < 3.0  # not the 60 s safety-net poll
    assert hooked.polls(fake) == 1
    assert any(c.status == 200 for c in fake.callbacks_sent)


async def test_duplicate_callbacks_deliver_once(hooked: Hooked, fake: FakeApimart) -> None:
    job = await hooked.jobs.submit(build_request(model="sora-2", prompt="x"))
    await hooked.notifier.wait_finished(job.id, timeout=5.0)
    body = fake.status_payload(fake.tasks[job.task_id or ""])
    assert [await hooked.post(body) for _ in range(3)] == [200, 200, 200]
    await asyncio.sleep(0.2)
    assert hooked.notifier.finished_ids() == [job.id]
    assert hooked.polls(fake) == 1


async def test_forged_completion_is_polled_not_posted(hooked: Hooked, fake: FakeApimart) -> None:
    fake.plan_next(FakeTaskPlan(duration_s=1_000_000))  # runs for the whole test
    job = await hooked.jobs.submit(build_request(model="sora-2", prompt="x"))
    forged = {
        "code": 200,
        "data": {
            "id": job.task_id,
            "status": "completed",
            "progress": 100,
            "result": {"videos": [{"url": ["https://evil.example/x.mp4"]}]},
        },
    }
    assert await hooked.post(forged) == 200
    for _ in range(50):
        if hooked.polls(fake):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert hooked.polls(fake) == 1  # the hint was acted on: the task was polled at once
    assert hooked.notifier.finished == []  # the poll said running: nothing posted
    assert job.id in hooked.poller
    # a flood of forged hints costs at most one poll per second for that task
    for _ in range(20):
        await hooked.post(forged)
    await asyncio.sleep(0.3)
    assert hooked.polls(fake) <= 2


async def test_unknown_task_is_a_harmless_200(hooked: Hooked, fake: FakeApimart) -> None:
    status = await hooked.post({"data": {"id": "task_nobody", "status": "completed"}})
    assert status == 200
    assert hooked.server.unknown == 1
    assert hooked.polls(fake) == 0


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"\xff\xfe\x00", b"[1, 2]", b'{"data": {"status": "completed"}}', b"null"],
)
async def test_garbage_is_refused_and_nothing_breaks(hooked: Hooked, data: bytes) -> None:
    assert await hooked.post(data=data) == 400
    assert await hooked.post({"data": {"id": "task_after", "status": "x"}}) == 200


async def test_oversized_body_is_refused(hooked: Hooked) -> None:
    assert await hooked.post(data=b"{" + b" " * (MAX_BODY + 10) + b"}") == 413
    assert await hooked.post({"task_id": "task_x"}) == 200


async def test_prefixed_callback_path_is_accepted(hooked: Hooked) -> None:
    async with hooked.http.post(f"{hooked.url}/reelbot/callback", json={"id": "t"}) as resp:
        assert resp.status == 200


def test_task_id_shapes() -> None:
    assert task_id_of({"code": 200, "data": {"id": "task_1"}}) == "task_1"
    assert task_id_of({"data": [{"task_id": "task_2"}]}) == "task_2"
    assert task_id_of({"task_id": "task_3"}) == "task_3"
    assert task_id_of({"data": {"id": 5}}) is None
    assert task_id_of({"data": {"id": "x" * 500}}) is None
    assert task_id_of(["task_1"]) is None


async def test_bench_simulation_runs() -> None:
    from bench.poller import make_workload, run_simulation, simulation_targets

    results = await run_simulation(60)
    names = [r.name for r in results]
    assert names[0] == "fixed 5 s (baseline)" and names[2] == "adaptive + webhook"
    for r in results:
        assert r.jobs == 60 and len(r.delays) == 60 and r.requests >= 60
    targets = simulation_targets(results)
    assert [name.split(":")[0] for name, _, _ in targets[:2]] == [names[1], names[1]]
    assert len(targets) == 4
    assert len(make_workload(10)) == 10
