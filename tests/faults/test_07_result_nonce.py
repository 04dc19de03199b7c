"""Item 7: a result whose post was ambiguous (Discord made the message, the answer was lost)
is posted exactly once: a nonce derived from the job, and a look at the channel first."""

from __future__ import annotations

import asyncio
import re

import pytest

from bot.testing.fake_apimart import FakeTaskPlan
from tests.test_e2e import USER_ID, World, _wait, running_bot

pytestmark = pytest.mark.e2e

MESSAGES = r"^/channels/\d+/messages$"


def result_posts(world: World) -> list[object]:
    return [
        r
        for r in world.discord.requests
        if r.method == "POST" and re.search(MESSAGES, r.path) and _is_result(r.json)
    ]


def _is_result(body: object) -> bool:
    return isinstance(body, dict) and str(USER_ID) in str(body.get("content"))


async def synced(world: World) -> None:
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()


def test_the_nonce_is_the_jobs_and_fits_discord() -> None:
    from bot.discord.notifier import result_nonce

    assert result_nonce(42) == result_nonce(42) != result_nonce(43)
    assert len(result_nonce(10**30)) <= 25


async def test_a_dropped_answer_after_the_post_does_not_post_twice(world: World) -> None:
    """Discord creates the message, then the connection drops: the poller retries (5 s on);
    the retry finds the message and stops."""
    await synced(world)
    world.api.plan_next(FakeTaskPlan(duration_s=60))
    world.discord.fail_next("POST", MESSAGES, 0, after_processing=True, drop=True)
    async with running_bot(world):
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a red kite"))
        await _wait(world.results, 30, "the result message", world)
        await _wait(
            lambda: "not posted again" in world.all_logs() or len(world.results()) > 1,
            30,
            "the delivery retry",
            world,
        )
        await asyncio.sleep(0.5)
        assert len(world.results()) == 1, world.all_logs()[-3000:]
    posts = result_posts(world)
    nonces = {p.json.get("nonce") for p in posts}  # type: ignore[attr-defined]
    assert len(nonces) == 1 and all(p.json.get("enforce_nonce") for p in posts)  # type: ignore[attr-defined]


async def test_sigkill_during_the_result_post_then_restart_posts_once(world: World) -> None:
    """Discord has made the message and holds its answer; the bot is killed. The restart,
    which delivers the job again, finds the result among the channel's messages."""
    await synced(world)
    world.api.plan_next(FakeTaskPlan(duration_s=60))
    world.discord.hold_next("POST", MESSAGES, 60.0)
    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a green kite"))
        await _wait(world.results, 30, "the result message (held)", world)
        first.kill()
        await first.wait()
    assert len(world.results()) == 1
    world.discord.nonce_window = 0.0  # a restart long after: only the channel's history helps
    async with running_bot(world):
        await _wait(
            lambda: "not posted again" in world.all_logs() or len(world.results()) > 1,
            30,
            "the redelivery after the restart",
            world,
        )
        await asyncio.sleep(0.5)
        assert len(world.results()) == 1, world.all_logs()[-3000:]
    assert len(world.api.submit_attempts) == 1
