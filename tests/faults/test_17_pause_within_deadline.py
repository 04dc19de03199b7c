"""Hostile finding R3: `reelbot generate --timeout 8` against a stand-in that answers every poll
with 429 and an absurd Retry-After ran 65 s (95 s with `Retry-After: 30`).

The real `reelbot` process, the stand-in APIMart over real HTTP, the shipped pause bounds
(POLL_MAX_INTERVAL is left at its default, 60 s, so a capped pause alone would still run
long): each run ends at its deadline in the usual timeout outcome, said once.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from bot.testing.fake_apimart import FakeApimart
from tests.test_cli import KEY, reelbot

pytestmark = pytest.mark.e2e

TIMEOUT = 8
#: A hang guard, not a timing claim: the old code took 61-95 s here.
HANG_GUARD = 3 * TIMEOUT + 10
HOSTILE = {
    "huge": "1e12",
    "days": "999999",
    "far date": "Fri, 31 Dec 9999 23:59:59 GMT",
    "half a minute": "30",
    "negative": "-5",
    "nan": "nan",
    "inf": "inf",
}


async def _generate_under_429s(
    aiohttp_server: Any, tmp_path: Path, name: str, retry_after: str
) -> tuple[str, int, str, str, float]:
    fake = FakeApimart(api_key=KEY)
    fake.inject("task", 429, retry_after=retry_after, times=100_000)
    server = await aiohttp_server(fake.app)
    cwd = tmp_path / name.replace(" ", "_")
    cwd.mkdir()
    started = time.monotonic()
    code, out, err = await reelbot(
        "generate",
        "a fox",
        "--json",
        "--timeout",
        str(TIMEOUT),
        cwd=cwd,
        APIMART_BASE_URL=str(server.make_url("")).rstrip("/"),
        APIMART_API_KEY=KEY,
        POLL_INITIAL_DELAY="0.2",
        POLL_INTERVAL="0.2",
        DATABASE_URL="sqlite:///./data/cli.db",
    )
    return name, code, out, err, time.monotonic() - started


async def test_a_429_storm_with_absurd_retry_after_ends_at_the_timeout(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    runs = await asyncio.gather(
        *(_generate_under_429s(aiohttp_server, tmp_path, n, v) for n, v in HOSTILE.items())
    )
    for name, code, out, err, wall in runs:
        assert wall < HANG_GUARD, (name, wall)
        # The usual timeout outcome: the job was submitted, its end is unknown, exit 1.
        assert code == 1, (name, code, err[-500:])
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1, (name, out)  # one final message
        outcome = json.loads(lines[0])
        assert outcome["status"] == "unknown" and outcome["task_id"], (name, outcome)
        assert "stopped following" in outcome["error"], (name, outcome)
        assert err.count("given up on task") <= 1, (name, err[-500:])
        assert "Traceback" not in err, (name, err[-2000:])
