"""The HTTP listener over real HTTP on 127.0.0.1: what a probe, a scraper and an attacker see."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.core.health import Readiness
from bot.core.http import HttpListener
from bot.core.metrics import MAX_GUILD_SERIES, Metrics
from bot.core.webhook import WebhookServer


class Pokes:
    def __init__(self) -> None:
        self.poked: list[str] = []

    def poke(self, task_id: str) -> bool:
        self.poked.append(task_id)
        return True


async def start(**kwargs: Any) -> HttpListener:
    kwargs.setdefault("readiness", Readiness())
    kwargs.setdefault("metrics", Metrics())
    listener = HttpListener("127.0.0.1", 0, **kwargs)
    await listener.start()
    return listener


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, listener: HttpListener, path: str) -> tuple[int, str]:
    async with http.get(f"http://127.0.0.1:{listener.port}{path}") as response:
        return response.status, await response.text()


async def test_healthz_answers_while_the_loop_runs(http: aiohttp.ClientSession) -> None:
    listener = await start()
    try:
        assert listener.port != 0  # port 0 asked for any free port; the real one is known
        assert await get(http, listener, "/healthz") == (200, '{"ok": true}')
    finally:
        await listener.close()


async def test_readyz_names_each_failing_check(http: aiohttp.ClientSession) -> None:
    readiness = Readiness()
    broken = {"database": True}

    async def database() -> str | None:
        if broken["database"]:
            raise ConnectionRefusedError("postgres://admin:hunter2@db refused")
        return None

    readiness.add("database", database, ttl=0.0)
    readiness.add("poller", lambda: None)
    readiness.expect("gateway")
    listener = await start(readiness=readiness)
    try:
        status, text = await get(http, listener, "/readyz")
        body = json.loads(text)
        assert status == 503
        assert body["ready"] is False
        assert body["failing"] == ["database", "gateway"]
        assert body["checks"]["poller"] == "ok"
        assert body["checks"]["gateway"] == "not reported yet"
        assert "ConnectionRefusedError" in body["checks"]["database"]
        assert "hunter2" not in text  # an unauthenticated probe learns no details

        broken["database"] = False
        readiness.add("gateway", lambda: None)
        status, text = await get(http, listener, "/readyz")
        assert status == 200
        assert json.loads(text) == {
            "ready": True,
            "checks": {"database": "ok", "gateway": "ok", "poller": "ok"},
            "failing": [],
        }
    finally:
        await listener.close()


async def test_readyz_never_hangs_on_a_check_that_does_not_answer(
    http: aiohttp.ClientSession,
) -> None:
    readiness = Readiness()
    calls = 0

    async def database() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(3600)

    readiness.add("database", database, timeout=0.2, ttl=5.0)
    listener = await start(readiness=readiness)
    try:
        started = time.monotonic()
        answers = await asyncio.gather(*(get(http, listener, "/readyz") for _ in range(20)))
        assert time.monotonic() - started < 5.0
        assert {status for status, _ in answers} == {503}
        assert json.loads(answers[0][1])["checks"]["database"] == "no answer within 0.2 s"
        # Twenty probes at once cost one evaluation; the next ones are served from the cache.
        await get(http, listener, "/readyz")
        assert calls == 1
    finally:
        await listener.close()


async def test_metrics_parse_as_prometheus_text(http: aiohttp.ClientSession) -> None:
    metrics = Metrics()
    metrics.polls.inc(3)
    metrics.poll_seconds.observe(0.04)
    metrics.api_errors.labels(kind="ServerError").inc()
    metrics.rate_limited(2.0)
    metrics.discord_rest_error(403)
    metrics.lease_takeovers.inc(0)
    metrics.set_sample(
        {"running": 4, "created": 2, "completed": 10},
        {"111": 1.25, "222": 0.5, None: 0.1},
    )
    listener = await start(metrics=metrics)
    try:
        async with http.get(f"http://127.0.0.1:{listener.port}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    finally:
        await listener.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "reelbot_jobs",
        "reelbot_queue_length",
        "reelbot_polls",
        "reelbot_poll_duration_seconds",
        "reelbot_api_errors",
        "reelbot_api_rate_limited",
        "reelbot_lease_takeovers",
        "reelbot_spend_today",
        "reelbot_discord_rest_errors",
        "process_resident_memory_bytes",
    ):
        assert name in families, name

    def value(family: str, sample: str, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise AssertionError(f"{sample} {labels} not in /metrics")

    assert value("reelbot_jobs", "reelbot_jobs", state="running") == 4
    assert value("reelbot_jobs", "reelbot_jobs", state="failed") == 0  # every state is shown
    assert value("reelbot_queue_length", "reelbot_queue_length") == 2
    assert value("reelbot_polls", "reelbot_polls_total") == 3
    assert value("reelbot_poll_duration_seconds", "reelbot_poll_duration_seconds_count") == 1
    assert value("reelbot_api_errors", "reelbot_api_errors_total", kind="ServerError") == 1
    assert value("reelbot_api_rate_limited", "reelbot_api_rate_limited_total") == 1
    assert value("reelbot_discord_rest_errors", "reelbot_discord_rest_errors_total", status="403")
    assert value("reelbot_spend_today", "reelbot_spend_today", guild="111") == 1.25
    assert value("reelbot_spend_today", "reelbot_spend_today", guild="none") == 0.1


def test_spend_of_many_servers_is_bounded_in_series() -> None:
    metrics = Metrics()
    spend = {str(guild): 1.0 + guild / 1000 for guild in range(MAX_GUILD_SERIES + 50)}
    metrics.set_sample({}, spend)
    samples = [
        s for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples
    ]
    series = [s for s in samples if s.name == "reelbot_spend_today"]
    assert len(series) == MAX_GUILD_SERIES + 1
    other = next(s for s in series if s.labels["guild"] == "other")
    assert other.value == pytest.approx(sum(sorted(spend.values())[:50]))
    # A new sample replaces the old one: a server that spent nothing since midnight vanishes.
    metrics.set_sample({}, {"7": 2.0})
    text = metrics.render().decode()
    assert 'guild="7"' in text and 'guild="1"' not in text


def test_each_runtime_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.polls.inc(5)
    assert b"reelbot_polls_total 5.0" in first.render()
    assert b"reelbot_polls_total 0.0" in second.render()


async def test_webhook_shares_the_listener(http: aiohttp.ClientSession) -> None:
    pokes = Pokes()
    listener = await start(webhook=WebhookServer(pokes))
    try:
        url = f"http://127.0.0.1:{listener.port}/hooks/reelbot/callback"
        async with http.post(url, json={"data": {"id": "task_1"}}) as response:
            assert response.status == 200
        async with http.post(url, data=b"x" * (1 << 20)) as response:
            assert response.status == 413
        assert pokes.poked == ["task_1"]
    finally:
        await listener.close()
    listener = await start()  # no webhook configured: no callback route
    try:
        async with http.post(
            f"http://127.0.0.1:{listener.port}/callback", json={"id": "task_1"}
        ) as response:
            assert response.status in (404, 405)
    finally:
        await listener.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closes the connection (EOF or reset) within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(1024):
                pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def test_a_slowloris_is_cut_off_and_cannot_fill_the_listener(
    http: aiohttp.ClientSession,
) -> None:
    listener = await start(max_connections=8, header_timeout=2.0)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(8):
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
            conns.append((reader, writer))
        await asyncio.sleep(0.1)
        # The listener is full: one more connection is closed at once, not queued forever.
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        assert await _closed_within(reader, 0.5)  # well before the header deadline
        writer.close()
        assert listener.metrics.http_refused._value.get() >= 1
        # The drip-feeders are cut off after the header deadline...
        for _, writer in conns:
            writer.write(b"X-Drip: 1\r\n")
        closed = await asyncio.gather(*(_closed_within(r, 4.0) for r, _ in conns))
        assert all(closed)
        # ... and the listener serves again.
        assert (await get(http, listener, "/healthz"))[0] == 200
    finally:
        for _, writer in conns:
            writer.close()
        await listener.close()


async def test_a_dripped_body_gets_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.core.http.REQUEST_TIMEOUT", 0.5)
    listener = await start(webhook=WebhookServer(Pokes()))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(
            b"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        async with asyncio.timeout(5.0):
            status_line = await reader.readline()
        assert b" 408 " in status_line
        writer.close()
    finally:
        await listener.close()


async def test_garbage_in_a_tight_loop_writes_no_log_line_per_request(
    caplog: pytest.LogCaptureFixture, http: aiohttp.ClientSession
) -> None:
    caplog.set_level(logging.INFO)
    listener = await start()
    try:
        for _ in range(100):
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(b"\x16\x03\x01garbage that is not HTTP\r\n\r\n")
            await writer.drain()
            await reader.read()
            writer.close()
        for _ in range(50):
            async with http.get(f"http://127.0.0.1:{listener.port}/nope") as response:
                assert response.status == 404
        assert (await get(http, listener, "/healthz"))[0] == 200
    finally:
        await listener.close()
    noise = [r for r in caplog.records if r.name.startswith(("aiohttp", "bot.core.http"))]
    assert len(noise) <= 2, [r.getMessage() for r in noise]


async def test_a_taken_port_is_a_clear_error() -> None:
    first = await start()
    try:
        second = HttpListener("127.0.0.1", first.port, readiness=Readiness(), metrics=Metrics())
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+ \("):
            await second.start()
    finally:
        await first.close()
