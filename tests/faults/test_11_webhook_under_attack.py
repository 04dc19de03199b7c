"""Item 11: the webhook listener under attack. Half-open connections are closed after a
deadline and capped in number, so they cannot use up the bot's file descriptors; what it
refuses is logged once per window, not once per connection; nested JSON is a 400; and when
the bot itself runs out of file descriptors, the error says so instead of blaming APIMart."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.core.logs import RepeatFilter
from bot.core.webhook import ConnectionGuard, WebhookServer


class Nobody:
    def poke(self, task_id: str) -> bool:
        return False


@pytest.fixture
async def listening() -> AsyncIterator[WebhookServer]:
    guard = ConnectionGuard(max_connections=4, header_timeout=0.5, log_every=3600)
    server = WebhookServer(Nobody(), "127.0.0.1", 0, guard=guard)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def half_open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A slowloris connection: a request line and one header, then nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /callback HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read() == b""
    except (TimeoutError, ConnectionError):
        return False


async def post(port: int, body: bytes) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/callback",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response,
    ):
        await response.read()
        return response.status


async def test_a_half_open_connection_is_closed_after_the_deadline(
    listening: WebhookServer,
) -> None:
    reader, writer = await half_open(listening.port)
    assert await closed_by_server(reader, within=3.0)
    writer.close()
    assert listening.guard.timed_out == 1 and listening.guard.open == 0


async def test_connections_over_the_cap_are_closed_and_logged_once(
    listening: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.core.webhook"):
        held = [await half_open(listening.port) for _ in range(4)]
        extra = [await half_open(listening.port) for _ in range(50)]
        for reader, _ in extra:
            assert await closed_by_server(reader, within=0.4)  # before any deadline
        assert listening.guard.refused == 50
        for reader, _ in held:
            assert await closed_by_server(reader, within=3.0)
        assert await post(listening.port, b'{"id": "task_1"}') == 200  # room again
    for _, writer in held + extra:
        writer.close()
    lines = [r for r in caplog.records if r.name == "bot.core.webhook"]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]


async def test_deeply_nested_json_is_a_400(listening: WebhookServer) -> None:
    body = json.dumps({"data": {"id": "x"}}).encode()
    assert await post(listening.port, body) == 200
    nested = b"[" * 30_000 + b"]" * 30_000  # under the 64 KB body cap
    assert await post(listening.port, nested) == 400


def test_the_same_log_line_is_not_written_in_a_tight_loop() -> None:
    now = [0.0]
    flood = RepeatFilter(burst=5, window=60.0, clock=lambda: now[0])
    record = logging.LogRecord("asyncio", logging.ERROR, "x", 1, "socket.accept() failed", (), None)
    written = sum(flood.filter(record) for _ in range(100_000))
    assert written == 5
    now[0] = 61.0
    assert flood.filter(record) and "99995 similar lines suppressed" in str(record.msg)


def test_running_out_of_file_descriptors_is_not_blamed_on_apimart() -> None:
    """The bot's process hits EMFILE: the error names that, not "could not connect"."""
    script = textwrap.dedent(
        """
        import asyncio, os, resource
        import aiohttp
        from pydantic import SecretStr
        from bot.core.apimart import ApimartClient, ApimartError, RetryPolicy

        async def main():
            async with aiohttp.ClientSession() as session:
                api = ApimartClient(session, "http://127.0.0.1:9", SecretStr("sk-x"),
                                    retry=RetryPolicy(attempts=1))
                used = len(os.listdir("/proc/self/fd")) - 1  # minus the listing's own
                resource.setrlimit(resource.RLIMIT_NOFILE, (used, used))
                try:
                    await api.get_task("task_1")
                except ApimartError as exc:
                    print(str(exc))

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    out = done.stdout + done.stderr
    assert "ran out of resources" in out and "EMFILE" in out, out[-2000:]
