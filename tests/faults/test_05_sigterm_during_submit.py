"""Issue 8 item 5: SIGTERM while a submit is in flight waits for its answer, records the task,
and the restart delivers the video (once, submitted once)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3

import pytest

from bot.testing.fake_apimart import FakeTaskPlan
from tests.test_e2e import World, _wait, running_bot, world_fixture  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e


async def test_sigterm_during_a_submit_keeps_the_billed_task(world: World) -> None:
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    world.api.plan_next(FakeTaskPlan(duration_s=60))  # 1 s real once submitted
    # The stand-in takes the submit (the task exists, it will be billed) and holds the answer.
    world.api.inject("submit", 200, accept=True, delay=2.0)

    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a heron"))
        await _wait(lambda: world.api.submits, 15, "the submit", world)
        first.send_signal(signal.SIGTERM)  # the answer is still on its way
        async with asyncio.timeout(20):
            assert await first.wait() == 0
    (task_id,) = world.api.tasks
    db = sqlite3.connect(world.tmp / "reelbot.db")
    try:
        rows = db.execute("SELECT state, task_id FROM jobs").fetchall()
    finally:
        db.close()
    assert rows == [("running", task_id)], world.all_logs()[-3000:]

    async with running_bot(world):
        await _wait(world.results, 30, "the result after the restart", world)
        await asyncio.sleep(2.0)  # a duplicate would arrive now
        assert len(world.results()) == 1
    assert len(world.api.submit_attempts) == 1
