"""Buttons a member should not be able to break: ids of jobs that never existed, too big
for the database's integer, on SQLite and PostgreSQL. Real discord.py objects (simcord)."""

from __future__ import annotations

from typing import Any

import discord
import pytest

from bot.core.store import Store
from tests.discordfix import (  # noqa: F401 - fixtures
    Reel,
    bot_fixture,
    env_fixture,
    notifier_options_fixture,
    reel_fixture,
    runtime_fixture,
    simcord_bot_fixture,
)


async def message_with_button(reel: Reel, custom_id: str) -> Any:
    """A message carrying a button with this id (as a stale or tampered message could)."""
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label="x", custom_id=custom_id))
    channel = reel.bot.get_channel(reel.channel.id)
    assert isinstance(channel, discord.TextChannel)
    return await channel.send("old", view=view)


@pytest.mark.parametrize("action", ["reroll", "details", "cancel"])
@pytest.mark.parametrize("job_id", ["999999", str(2**31), str(2**63), "9" * 40])
async def test_a_button_of_a_job_that_does_not_exist_says_so(
    reel: Reel, action: str, job_id: str
) -> None:
    message = await message_with_button(reel, f"reelbot:{action}:{job_id}")
    clicked = await reel.alice.click(message, custom_id=f"reelbot:{action}:{job_id}")
    assert clicked.ephemeral
    assert "no longer known" in clicked.response.content.lower() or (
        "not known" in clicked.response.content.lower()
    ), clicked.response.content
    assert not reel.fake.submits


@pytest.mark.parametrize("job_id", [0, 2**31, 2**63, 10**40])
async def test_the_store_knows_no_job_beyond_the_id_range(database_url: str, job_id: int) -> None:
    # On PostgreSQL 2**31 overflowed int4 inside the driver; on SQLite 2**63 did.
    store = await Store.open(database_url)
    try:
        assert await store.get(job_id) is None
    finally:
        await store.close()


async def test_a_member_without_manage_server_is_refused_by_every_videoadmin_subcommand(
    reel: Reel,
) -> None:
    (command,) = [c for c in await reel.bot.tree.fetch_commands() if c.name == "videoadmin"]
    reel.guild.set_command_permissions(command, {reel.alice: True})
    role = reel.guild.create_role("vip")
    alerts = reel.guild.create_text_channel("alerts")
    calls: dict[str, dict[str, Any]] = {
        "settings": {},
        "model": {"model": "sora-2", "enabled": False},
        "limit": {"name": "server_daily_spend", "value": "0"},
        "role": {"role": role, "name": "member_daily_jobs", "value": "1"},
        "block": {"member": reel.bob, "reason": "spam"},
        "unblock": {"member": reel.bob},
        "words": {"action": "add", "phrase": "kite"},
        "usage": {},
        "balance": {},
        "alerts": {"channel": alerts},
    }
    for sub, options in calls.items():
        result = await reel.alice.slash(reel.channel, f"videoadmin {sub}", **options)
        assert result.ephemeral and "Manage Server" in result.response.content, sub
    controls = reel.runtime.controls
    assert controls is not None
    _, changes = await controls.settings(str(reel.guild.id))
    assert changes == []
    assert len(reel.env.errors) == len(calls)  # the failed checks, seen by simcord
    result = await reel.bob.slash(reel.channel, "video sora", prompt="a kite")
    assert not result.ephemeral  # not blocked, no banned word, model enabled
