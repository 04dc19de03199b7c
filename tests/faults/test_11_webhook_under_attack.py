"""Item 11: the webhook under attack. The listener's connection cap and header deadline are
the shared HTTP listener's (`bot.core.http`, tested in `tests/test_http.py`); here: nested
JSON is a 400, no log line is written in a tight loop, and when the bot itself runs out of
file descriptors the error says so instead of blaming APIMart."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.core.health import Readiness
from bot.core.http import HttpListener
from bot.core.logs import RepeatFilter
from bot.core.metrics import Metrics
from bot.core.webhook import WebhookServer


class Nobody:
    def poke(self, task_id: str) -> bool:
        return False


@pytest.fixture
async def listening() -> AsyncIterator[HttpListener]:
    """The process's one HTTP listener (`bot.core.http`) with the webhook mounted."""
    listener = HttpListener(
        "127.0.0.1", 0, readiness=Readiness(), metrics=Metrics(), webhook=WebhookServer(Nobody())
    )
    await listener.start()
    try:
        yield listener
    finally:
        await listener.close()


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


async def test_deeply_nested_json_is_a_400_not_a_traceback(
    listening: HttpListener, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps({"data": {"id": "x"}}).encode()
    assert await post(listening.port, body) == 200
    nested = b"[" * 30_000 + b"]" * 30_000  # under the 64 KB body cap
    with caplog.at_level(logging.ERROR):
        assert await post(listening.port, nested) == 400
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


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
