"""Item 16: `/video` is registered for servers only, but an interaction from a DM still
arrives (a stale client, a forged payload). It is refused at run time: nothing created."""

from __future__ import annotations

import sqlite3

import pytest

from tests.test_e2e import USER_ID, World, running_bot

pytestmark = pytest.mark.e2e


def dm_interaction(world: World, prompt: str) -> dict[str, object]:
    """The same slash command, as Discord would send it from a DM with the bot."""
    payload = world.slash_sora(prompt)
    user = world.discord.users[USER_ID]
    dm_channel = world.discord.next_id()
    for key in ("guild_id", "guild", "member", "guild_locale"):
        payload.pop(key, None)
    payload.update(
        user=user,
        context=1,
        channel_id=str(dm_channel),
        channel={"id": str(dm_channel), "type": 1, "recipients": [user], "flags": 0},
        authorizing_integration_owners={"1": str(USER_ID)},
    )
    return payload


async def test_a_dm_interaction_is_refused_privately_and_creates_nothing(world: World) -> None:
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    async with running_bot(world):
        await world.discord.dispatch("INTERACTION_CREATE", dm_interaction(world, "a fox"))
        callback = await world.discord.wait_for(
            lambda r: r.path.endswith("/callback") and r.method == "POST", timeout=15
        )
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] & 64  # ephemeral
    assert "servers only" in callback.json["data"]["content"]
    assert world.api.uploads == {} and world.api.submit_attempts == []
    with sqlite3.connect(world.tmp / "reelbot.db") as db:
        assert db.execute("select count(*) from jobs").fetchone() == (0,)
