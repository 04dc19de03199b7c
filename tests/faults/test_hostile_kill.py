"""Hostile pass: SIGKILL at each phase of a Discord job, then a restart.

Each ends with what reached the fake Discord and the stand-in APIMart: at most one submit, and
one message to the requester. The last two reproduce windows that issue 8 items 7 and 8 closed
(the result nonce + channel history; the job's place stored with the job).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3

import pytest

from bot.testing.fake_apimart import FakeTaskPlan
from tests.test_e2e import World, _wait, running_bot, world_fixture  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

CHANNEL_POST = r"^/channels/\d+/messages$"
CHANNEL_MESSAGE = r"^/channels/\d+/messages/\d+$"


def _rows(world: World) -> list[tuple]:
    db = sqlite3.connect(world.tmp / "reelbot.db")
    try:
        return db.execute("SELECT id, state, task_id, delivered, error_code FROM jobs").fetchall()
    finally:
        db.close()


def _posts(world: World) -> list[dict]:
    """The bot's own new channel messages (each pings the requester)."""
    return world.discord.bot_messages(world.channel_id)


def _dump(world: World) -> str:
    out = []
    for r in world.discord.requests:
        if r.kind == "api" and r.method in ("POST", "PATCH"):
            body = json.dumps(r.json)[:300] if r.json else ""
            out.append(f"{r.method} {r.path} -> {r.status} {body}")
    return "\n".join(out)


async def _sync(world: World) -> None:
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()


async def test_kill_during_upload(world: World) -> None:
    await _sync(world)
    world.api.inject("upload", 200, delay=5.0)
    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a heron"))
        await world.discord.wait_for(
            lambda r: r.path.endswith("/callback") and r.method == "POST", timeout=10
        )
        await asyncio.sleep(1.0)
        first.kill()
        await first.wait()
    assert [r[1] for r in _rows(world)] == ["created"]
    async with running_bot(world):
        await _wait(lambda: any(r[3] for r in _rows(world)), 20, "the restart's word", world)
        await asyncio.sleep(2.0)
    assert [r[1:] for r in _rows(world)] == [("failed", None, 1, "interrupted")]
    assert world.api.submit_attempts == []
    assert len(_posts(world)) == 1, _dump(world)


async def test_kill_during_submit(world: World) -> None:
    await _sync(world)
    world.api.plan_next(FakeTaskPlan(duration_s=60))
    world.api.inject("submit", 200, accept=True, delay=3.0)
    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a heron"))
        await _wait(lambda: world.api.submit_attempts, 15, "the submit", world)
        await asyncio.sleep(0.5)
        first.kill()
        await first.wait()
    await asyncio.sleep(3.0)  # the stand-in finishes taking it: billed, its answer lost
    assert len(world.api.tasks) == 1
    assert [r[1] for r in _rows(world)] == ["submitting"]
    async with running_bot(world):
        await _wait(lambda: any(r[3] for r in _rows(world)), 20, "the restart's word", world)
        await asyncio.sleep(2.0)
    assert [r[1:] for r in _rows(world)] == [("unknown", None, 1, "submit_unknown")]
    assert len(world.api.submit_attempts) == 1  # never resent
    assert len(_posts(world)) == 1, _dump(world)


async def test_kill_while_result_post_held(world: World) -> None:
    await _sync(world)
    world.api.plan_next(FakeTaskPlan(duration_s=60))
    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a heron"))
        await _wait(lambda: world.api.submits, 15, "the submit", world)
        world.discord.fail_next("POST", CHANNEL_POST, 429, retry_after=8.0)
        await world.discord.wait_for(
            lambda r: (
                r.method == "POST"
                and re.search(CHANNEL_POST, r.path) is not None
                and r.status == 429
            ),
            timeout=20,
        )
        first.kill()
        await first.wait()
    async with running_bot(world):
        await _wait(world.results, 30, "the result after restart", world)
        await asyncio.sleep(3.0)
    assert len(world.results()) == 1, _dump(world)
    assert len(world.api.submit_attempts) == 1


async def test_kill_between_post_and_delivered(world: World) -> None:
    """The result is posted; the final status edit is held (429), so `delivered` is not yet
    written; SIGKILL; the restart posts the result a second time."""
    await _sync(world)
    world.api.plan_next(FakeTaskPlan(duration_s=60))
    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a heron"))
        await _wait(lambda: world.api.submits, 15, "the submit", world)
        await world.discord.wait_for(
            lambda r: r.method == "PATCH" and re.search(CHANNEL_MESSAGE, r.path) is not None,
            timeout=15,
        )
        world.discord.fail_next("PATCH", CHANNEL_MESSAGE, 429, retry_after=8.0, times=5)
        await _wait(world.results, 30, "the result", world)
        await asyncio.sleep(0.3)
        first.kill()
        await first.wait()
    assert [r[3] for r in _rows(world)] == [0]
    async with running_bot(world):
        await asyncio.sleep(5.0)
    assert len(world.results()) == 1, _dump(world)


async def test_kill_while_status_message_is_made(world: World) -> None:
    """Deferred, then the edit of @original into the status message is held; SIGKILL; the
    restart settles the job `interrupted` but has no channel to say it in: the requester is
    left with "thinking…" and no word."""
    await _sync(world)
    world.discord.fail_next("PATCH", r"/messages/@original$", 429, retry_after=8.0, times=3)
    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a heron"))
        await world.discord.wait_for(
            lambda r: r.method == "PATCH" and r.path.endswith("@original") and r.status == 429,
            timeout=15,
        )
        await asyncio.sleep(0.5)
        first.kill()
        await first.wait()
    async with running_bot(world):
        await asyncio.sleep(5.0)
    assert world.api.submit_attempts == []
    assert len(_posts(world)) == 1, _dump(world)
