"""Item 8: the status message's place is stored with the job, so a crash while the deferred
reply is being turned into the status message still ends with one message to the requester;
and an @original that cannot be edited never makes the error text public."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot.testing.fake_apimart import FakeTaskPlan
from bot.testing.fake_discord.protocol import MESSAGE_FLAG_LOADING
from tests.test_e2e import USER_ID, World, _wait, running_bot

pytestmark = pytest.mark.e2e

ORIGINAL = r"^/webhooks/\d+/[^/]+/messages/@original$"


def to_requester(world: World) -> list[dict[str, Any]]:
    """The bot's messages in the channel that mention the requester."""
    return [
        m
        for m in world.discord.bot_messages(world.channel_id)
        if str(USER_ID) in str(m.get("content"))
    ]


def channel_messages(world: World) -> list[dict[str, Any]]:
    """Everything in the channel, interaction replies included."""
    return list(world.discord.messages.get(world.channel_id, []))


def public_text(world: World) -> str:
    return json.dumps([m for m in channel_messages(world) if not int(m["flags"]) & 64])


async def synced(world: World) -> None:
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()


async def test_sigkill_while_the_status_message_is_made_then_restart_tells_the_requester(
    world: World,
) -> None:
    await synced(world)
    world.discord.hold_next("PATCH", ORIGINAL, 60.0, processed=False)
    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a paper boat"))
        await world.discord.wait_for(lambda r: r.path.endswith("/callback"), timeout=15)
        await _wait(lambda: "created (" in world.all_logs(), 15, "the job to be written", world)
        await asyncio.sleep(0.3)  # the PATCH of @original is now held by Discord
        first.kill()
        await first.wait()
    (placeholder,) = channel_messages(world)
    assert int(placeholder["flags"]) & MESSAGE_FLAG_LOADING  # "thinking…"

    async with running_bot(world):
        told = await _wait(lambda: to_requester(world), 30, "a message to the requester", world)
        await asyncio.sleep(1.0)
        assert len(to_requester(world)) == 1, told
    assert "stopped before this job was sent" in json.dumps(told)
    # The placeholder was edited with the bot's token: no longer "thinking…".
    assert not int(placeholder["flags"]) & MESSAGE_FLAG_LOADING
    assert world.api.submit_attempts == []


async def test_an_original_that_cannot_be_edited_keeps_errors_private_and_the_job_going(
    world: World,
) -> None:
    await synced(world)
    world.api.plan_next(FakeTaskPlan(duration_s=60))
    world.discord.fail_next("PATCH", ORIGINAL, 404, code=10008, message="Unknown Message", times=20)
    async with running_bot(world):
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a tin robot"))
        results = await _wait(world.results, 30, "the result message", world)
        await asyncio.sleep(1.0)
        assert len(world.results()) == 1, results
    assert "Something went wrong" not in public_text(world)
    assert "Error id" not in public_text(world)
    assert len(world.api.submits) == 1
