"""SQLite stays single-process, and says so; `reelbot generate` beside the bot keeps its job.

Before leases, a second `reelbot run` on the same file resumed and reported every job again,
and a bot starting beside a `reelbot generate` marked the terminal's job `unknown` ("may be
billed") while it went on to complete.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from bot.testing.fake_apimart import FakeTaskPlan
from tests.test_e2e import World, _wait, running_bot, world_fixture  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e


async def test_a_second_bot_on_the_same_sqlite_file_refuses_in_one_line(world: World) -> None:
    async with running_bot(world) as first:
        second = await world.reelbot("run")
        async with asyncio.timeout(30):
            code = await second.wait()
        output = world.logs[-1].read_text()
        assert code == 1
        assert "Traceback" not in output
        # (The test runs at DEBUG: a log line or two come before it.)
        (refusal,) = [line for line in output.splitlines() if line.startswith("error:")]
        assert "PostgreSQL" in refusal and "reelbot.db" in refusal
        assert first.returncode is None  # the running bot is untouched


async def test_generate_beside_a_starting_bot_completes_its_own_job(world: World) -> None:
    world.api.plan_next(FakeTaskPlan(duration_s=480))  # 8 s real: the bot starts meanwhile
    generate = await world.reelbot("generate", "a kingfisher", "--duration", "4", "--json")
    generate_log = world.logs[-1]
    await _wait(lambda: world.api.submits, 30, "the terminal's submit", world)

    async with running_bot(world):
        async with asyncio.timeout(60):
            code = await generate.wait()
        await asyncio.sleep(1.0)
    output = generate_log.read_text()
    assert code == 0, output
    (line,) = [x for x in output.splitlines() if x.startswith('{"task_id"')]
    result = json.loads(line)
    assert result["status"] == "completed" and result["video_urls"]

    rows = sqlite3.connect(world.tmp / "reelbot.db").execute(
        "SELECT id, state, error_code FROM jobs"
    )
    ((job_id, state, error_code),) = rows.fetchall()
    assert (state, error_code) == ("completed", None)
    bot_log = world.logs[-1].read_text()
    assert f"job {job_id}:" not in bot_log  # the bot never touched it
    assert world.results() == []  # and posted nothing about it
    assert len(world.api.submit_attempts) == 1
