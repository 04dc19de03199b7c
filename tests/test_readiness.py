"""`/readyz` and `/metrics` of a real runtime, with a database that stops answering.

The shared PostgreSQL cannot be stopped (other test runs use it), so the runtime reaches it
through a small TCP proxy in this test: closing the proxy is the database going away, a
frozen proxy is a database that accepts connections and then never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from bot.core.config import Settings
from bot.core.job import JobState
from bot.core.request import build_request
from bot.core.runtime import Runtime, open_runtime
from bot.testing.fake_apimart import FakeApimart
from bot.testing.notifier import RecordingNotifier
from tests.conftest import API_KEY, POSTGRES_URL

#: What the issue promises: unready within 10 s of the database stopping, ready again after.
FLIP_WITHIN = 10.0


class TcpProxy:
    """127.0.0.1:port → target, which a test can close, reopen or freeze."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                while self.frozen:
                    await asyncio.sleep(0.05)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        """The database is gone: nothing listens, every open connection is reset."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL: set REELBOT_TEST_POSTGRES_URL (.ci/run does)")
    url = make_url(POSTGRES_URL)
    tcp = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await tcp.start()
    try:
        yield tcp
    finally:
        tcp.frozen = False
        await tcp.close()


def settings_for(api_url: str, database_url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        APIMART_API_KEY=API_KEY,
        APIMART_BASE_URL=api_url,
        DATABASE_URL=database_url,
        HTTP_LISTEN="127.0.0.1:0",
        POLL_INITIAL_DELAY=0.02,
        POLL_INTERVAL=0.02,
        POLL_MAX_INTERVAL=0.05,
        API_REQUESTS_PER_SECOND=1000.0,
        API_TIMEOUT=5.0,
    )


async def readyz(rt: Runtime) -> tuple[int, dict[str, Any]]:
    assert rt.http is not None
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{rt.http.port}/readyz") as response,
    ):
        return response.status, json.loads(await response.text())


async def seconds_until(
    probe: Callable[[], Awaitable[bool]], limit: float = FLIP_WITHIN + 5.0
) -> float:
    started = time.monotonic()
    while not await probe():
        if time.monotonic() - started > limit:
            return float("inf")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def test_readyz_follows_the_database_going_away_and_coming_back(
    proxy: TcpProxy, api_url: str
) -> None:
    assert POSTGRES_URL is not None
    proxied = make_url(POSTGRES_URL).set(host="127.0.0.1", port=proxy.port)
    settings = settings_for(api_url, proxied.render_as_string(hide_password=False))
    async with open_runtime(settings, RecordingNotifier(), serve_http=True) as rt:
        assert await readyz(rt) == (
            200,
            {"ready": True, "checks": {"database": "ok", "poller": "ok"}, "failing": []},
        )

        async def unready() -> bool:
            status, body = await readyz(rt)
            return status == 503 and body["failing"] == ["database"]

        async def ready() -> bool:
            return (await readyz(rt))[0] == 200

        await proxy.close()  # the database stops
        assert await seconds_until(unready) <= FLIP_WITHIN
        await proxy.start()  # and comes back on the same address
        assert await seconds_until(ready) <= FLIP_WITHIN

        proxy.frozen = True  # accepts, then never answers: the check's own timeout decides
        assert await seconds_until(unready) <= FLIP_WITHIN
        _, body = await readyz(rt)
        assert "no answer" in body["checks"]["database"]
        proxy.frozen = False
        await proxy.close()  # drop the connections stuck while frozen
        await proxy.start()
        assert await seconds_until(ready) <= FLIP_WITHIN


async def test_readyz_on_sqlite_fails_when_the_store_does(
    api_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(api_url, f"sqlite:///{tmp_path / 'jobs.db'}")
    async with open_runtime(settings, RecordingNotifier(), serve_http=True) as rt:
        assert (await readyz(rt))[0] == 200

        async def unreadable() -> None:
            raise OSError("disk I/O error")

        monkeypatch.setattr(rt.store, "ping", unreadable)
        assert await seconds_until(lambda: _status_is(rt, 503)) <= FLIP_WITHIN
        monkeypatch.undo()
        assert await seconds_until(lambda: _status_is(rt, 200)) <= FLIP_WITHIN


async def _status_is(rt: Runtime, status: int) -> bool:
    return (await readyz(rt))[0] == status


async def test_readyz_waits_for_the_front_end_and_a_live_poller(
    api_url: str, tmp_path: Path
) -> None:
    settings = settings_for(api_url, f"sqlite:///{tmp_path / 'jobs.db'}")
    async with open_runtime(
        settings, RecordingNotifier(), serve_http=True, expect_ready=("gateway",)
    ) as rt:
        status, body = await readyz(rt)
        assert status == 503 and body["failing"] == ["gateway"]
        connected = {"up": False}
        rt.readiness.add("gateway", lambda: None if connected["up"] else "disconnected", ttl=0)
        assert (await readyz(rt))[1]["checks"]["gateway"] == "disconnected"
        connected["up"] = True
        assert (await readyz(rt))[0] == 200
        await rt.poller.stop()  # the loop ends (a crash, say): not ready any more
        await asyncio.sleep(0.1)
        status, body = await readyz(rt)
        assert status == 503 and body["failing"] == ["poller"]


async def test_metrics_of_a_runtime_count_real_polls_errors_and_jobs(
    api_url: str, fake: FakeApimart, tmp_path: Path
) -> None:
    settings = settings_for(api_url, f"sqlite:///{tmp_path / 'jobs.db'}")
    notifier = RecordingNotifier()
    async with open_runtime(settings, notifier, serve_http=True) as rt:
        fake.inject("task", 429, retry_after=0.01)
        fake.inject("task", 500, times=1)
        job = await rt.jobs.submit(
            build_request(model="sora-2", prompt="a fox"), guild_id="4242", requester="7"
        )
        done = await notifier.wait_finished(job.id, timeout=10.0)
        assert done.state is JobState.COMPLETED
        assert rt.sampler is not None
        await rt.sampler.sample()  # the periodic sample, now rather than in 15 s
        assert rt.http is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{rt.http.port}/metrics") as response,
        ):
            text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    polls = sum(1 for _, path in fake.requests if path.startswith("/v1/tasks/"))
    assert samples[("reelbot_polls_total", ())] >= 1
    assert samples[("reelbot_poll_duration_seconds_count", ())] >= 1
    assert samples[("reelbot_api_rate_limited_total", ())] == 1
    assert polls >= 3  # the 429, the 500 and the answer: all real requests
    assert samples[("reelbot_jobs", (("state", "completed"),))] == 1
    assert samples[("reelbot_queue_length", ())] == 0
    assert samples[("reelbot_spend_today", (("guild", "4242"),))] == pytest.approx(done.cost)
