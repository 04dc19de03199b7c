"""`/videoadmin` and `/video usage` through simcord: real discord.py objects, the real runtime
(with its community controls), the stand-in APIMart.

What an admin and a member would notice: what each command answers (and to whom), what a
refusal says, whether anything reached APIMart, and that a member without Manage Server can
change nothing even when an admin made the command visible to them.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import discord
import pytest

from bot.core.controls.limits import LIMITS
from bot.core.job import JobState
from bot.testing.fake_apimart import FakeTaskPlan
from tests.discordfix import (  # noqa: F401 - fixtures
    Reel,
    bot_fixture,
    env_fixture,
    notifier_options_fixture,
    reel_fixture,
    runtime_fixture,
    simcord_bot_fixture,
)

SETTINGS_VALUES = {
    "member_concurrent": ("3", "3"),
    "member_daily_jobs": ("20", "20"),
    "member_daily_spend": ("1.5", "$1.50"),
    "member_monthly_spend": ("10", "$10.00"),
    "member_cooldown_seconds": ("30", "30 s"),
    "server_concurrent": ("6", "6"),
    "server_daily_spend": ("25.125", "$25.125"),
    "server_monthly_spend": ("off", "off"),
}


@pytest.fixture(name="mod")
def mod_fixture(reel: Reel) -> Any:
    """A member whose role has Manage Server."""
    role = reel.guild.create_role("mods", permissions=discord.Permissions(manage_guild=True))
    return reel.guild.add_member(reel.env.create_user("mod"), roles=[role])


def guild_id(reel: Reel) -> str:
    return str(reel.guild.id)


async def admin(reel: Reel, who: Any, sub: str, **options: Any) -> Any:
    return await who.slash(reel.channel, f"videoadmin {sub}", **options)


async def settings_text(reel: Reel, mod: Any) -> str:
    result = await admin(reel, mod, "settings")
    assert result.ephemeral
    (embed,) = result.response.embeds
    return "\n".join(f"{f.name}: {f.value}" for f in embed.fields)


def deferred_publicly(reel: Reel) -> bool:
    callbacks = [r for r in reel.env.http_requests if r.path.endswith("/callback")]
    return bool(callbacks) and callbacks[-1].json == {"type": 5}


# -- who may change settings ----------------------------------------------------------------


async def test_a_member_without_manage_server_changes_nothing_even_if_shown_the_command(
    reel: Reel,
) -> None:
    (command,) = [c for c in await reel.bot.tree.fetch_commands() if c.name == "videoadmin"]
    # An admin overrides the default so that alice sees /videoadmin (Discord allows it).
    reel.guild.set_command_permissions(command, {reel.alice: True})
    result = await admin(reel, reel.alice, "limit", name="server_daily_spend", value="0")
    assert result.ephemeral and "Manage Server" in result.response.content
    assert "Nothing changed" in result.response.content
    assert reel.env.errors  # the failed check, seen by simcord; acknowledged here
    controls = reel.runtime.controls
    assert controls is not None
    settings, changes = await controls.settings(guild_id(reel))
    assert settings.server_limit("server_daily_spend") is None and changes == []


async def test_every_limit_is_set_shown_and_audited(reel: Reel, mod: Any) -> None:
    assert list(SETTINGS_VALUES) == list(LIMITS)
    for name, (value, _) in SETTINGS_VALUES.items():
        result = await admin(reel, mod, "limit", name=name, value=value)
        assert result.ephemeral and "→" in result.response.content, result.response.content
    text = await settings_text(reel, mod)
    for name, (_, shown) in SETTINGS_VALUES.items():
        assert f"`{name}` {shown}" in text
    # The last 10 changes: who, what, old → new.
    assert "**server_daily_spend**: off → $25.125" in text
    assert (
        "**member_concurrent**: 2 → 3" in text and "**member_cooldown_seconds**: off → 30" in text
    )
    assert text.count(f"<@{mod.id}>") == 7  # server_monthly_spend off → off is no change


async def test_a_bad_limit_value_names_the_field_and_changes_nothing(reel: Reel, mod: Any) -> None:
    result = await admin(reel, mod, "limit", name="member_daily_spend", value="lots")
    assert result.ephemeral and result.response.content.startswith("Not changed: value:")
    result = await admin(reel, mod, "limit", name="server_concurrent", value="0")
    assert "at least 1" in result.response.content
    text = await settings_text(reel, mod)
    assert "`member_daily_spend` off *(default)*" in text
    assert "`server_concurrent` 8 *(default)*" in text


# -- refusals members see -------------------------------------------------------------------


async def test_a_disabled_or_capped_model_is_refused_privately(reel: Reel, mod: Any) -> None:
    await admin(reel, mod, "model", model="sora-2", enabled=False)
    result = await reel.alice.slash(reel.channel, "video sora", prompt="a kite")
    assert result.ephemeral and "disabled on this server" in result.response.content
    assert not deferred_publicly(reel)
    await admin(
        reel, mod, "model", model="sora-2-pro", enabled=True, max_resolution="720p", max_duration=8
    )
    result = await reel.alice.slash(
        reel.channel, "video sora", prompt="a kite", model="sora-2-pro", duration=12
    )
    assert result.ephemeral and "up to 8 s" in result.response.content
    result = await reel.alice.slash(
        reel.channel, "video sora", prompt="a kite", model="sora-2-pro", resolution="1080p"
    )
    assert result.ephemeral and "up to 720p" in result.response.content
    assert reel.fake.submit_attempts == []
    text = await settings_text(reel, mod)
    assert "`sora-2` ❌ disabled" in text and "`sora-2-pro` ✅ · ≤ 720p · ≤ 8 s" in text


async def test_a_spend_cap_refusal_says_what_is_left_and_when_it_resets(
    reel: Reel, mod: Any
) -> None:
    await admin(reel, mod, "limit", name="member_daily_spend", value="0.05")
    await reel.alice.slash(reel.channel, "video sora", prompt="first")  # learns the price
    await reel.wait_results()
    result = await reel.alice.slash(reel.channel, "video sora", prompt="second")
    assert result.ephemeral and not deferred_publicly(reel)
    content = result.response.content
    assert "≈ $0.04" in content and "daily spending limit ($0.05)" in content
    assert "$0.01 left" in content and "Resets <t:" in content
    assert len(content.splitlines()) <= 2
    assert len(reel.fake.submits) == 1


async def test_role_tiers_are_the_most_generous(reel: Reel, mod: Any) -> None:
    patrons = reel.guild.create_role("patrons")
    carol = reel.guild.add_member(reel.env.create_user("carol"), roles=[patrons])
    await admin(reel, mod, "limit", name="member_daily_jobs", value="1")
    result = await admin(reel, mod, "role", role=patrons, name="member_daily_jobs", value="off")
    assert "server default → **off**" in result.response.content
    for who in (reel.alice, carol):
        await who.slash(reel.channel, "video sora", prompt="one")
    refused = await reel.alice.slash(reel.channel, "video sora", prompt="two")
    assert refused.ephemeral and "0 left" in refused.response.content
    allowed = await carol.slash(reel.channel, "video sora", prompt="two")
    assert not allowed.ephemeral
    assert len(reel.fake.submits) == 3


async def test_block_and_unblock(reel: Reel, mod: Any) -> None:
    await admin(reel, mod, "block", member=reel.alice, reason="flooding #videos")
    result = await reel.alice.slash(reel.channel, "video omni", prompt="x")
    assert result.ephemeral and "blocked" in result.response.content
    assert "flooding #videos" in result.response.content
    await admin(reel, mod, "unblock", member=reel.alice)
    result = await reel.alice.slash(reel.channel, "video omni", prompt="x")
    assert not result.ephemeral and len(reel.fake.submits) == 1


async def test_banned_words_are_refused_without_naming_them(reel: Reel, mod: Any) -> None:
    added = await admin(reel, mod, "words", action="add", phrase="Zürich")
    assert added.response.content == "Added."
    listed = await admin(reel, mod, "words", action="list")
    assert "`Zürich`" in listed.response.content
    result = await reel.alice.slash(reel.channel, "video sora", prompt="ZURICH at night")
    assert result.ephemeral and "not allowed" in result.response.content
    assert "zurich" not in result.response.content.lower()
    removed = await admin(reel, mod, "words", action="remove", phrase="zurich")
    assert removed.response.content == "Removed."
    result = await reel.alice.slash(reel.channel, "video sora", prompt="ZURICH at night")
    assert not result.ephemeral and len(reel.fake.submits) == 1


# -- the queue ------------------------------------------------------------------------------


def cancel_id(message: Any) -> str | None:
    for row in message.components:
        for item in getattr(row, "children", [row]):
            if (getattr(item, "custom_id", None) or "").startswith("reelbot:cancel:"):
                return str(item.custom_id)
    return None


async def test_a_queued_job_shows_its_place_and_can_be_cancelled(reel: Reel, mod: Any) -> None:
    await admin(reel, mod, "limit", name="server_concurrent", value="1")
    reel.fake.default_plan = FakeTaskPlan(duration_s=4000.0)  # 4 s: alice keeps the slot
    assert reel.runtime.controls is not None
    await reel.runtime.controls.seed_prices({("sora-2", "720p"): 10_000})  # $0.01 a second
    first = await reel.alice.slash(reel.channel, "video sora", prompt="first")
    queued = await reel.bob.slash(reel.channel, "video sora", prompt="second")
    assert not queued.ephemeral  # a concurrency limit queues; it does not refuse
    status = queued.response.message
    description = status.embeds[0].description
    assert "queued (position 1)" in description and "≈ $0.04" in description
    custom_id = cancel_id(status)
    assert custom_id is not None and cancel_id(first.response.message) is None
    assert len(reel.fake.submits) == 1
    other = await reel.alice.click(status, custom_id=custom_id)
    assert other.ephemeral and "Only the member" in other.response.content
    mine = await reel.bob.click(status, custom_id=custom_id)
    assert mine.followups[0].ephemeral and "Cancelled" in mine.followups[0].content
    job = await reel.runtime.store.get(int(custom_id.rsplit(":", 1)[1]))
    assert job is not None and job.state is JobState.CANCELLED
    edited = reel.env.backend.get_message(status.channel.id, status.id)
    assert not edited.components
    assert len(reel.fake.submits) == 1


async def test_a_moderator_may_cancel_anyones_queued_job(reel: Reel, mod: Any) -> None:
    await admin(reel, mod, "limit", name="server_concurrent", value="1")
    reel.fake.default_plan = FakeTaskPlan(duration_s=4000.0)
    await reel.alice.slash(reel.channel, "video sora", prompt="first")
    queued = await reel.bob.slash(reel.channel, "video sora", prompt="second")
    custom_id = cancel_id(queued.response.message)
    assert custom_id is not None
    clicked = await mod.click(queued.response.message, custom_id=custom_id)
    assert "Cancelled" in clicked.followups[0].content


async def test_the_queued_job_runs_when_the_slot_frees(reel: Reel, mod: Any) -> None:
    await admin(reel, mod, "limit", name="server_concurrent", value="1")
    await reel.alice.slash(reel.channel, "video sora", prompt="first")
    queued = await reel.bob.slash(reel.channel, "video sora", prompt="second")
    results = await reel.wait_results(2, timeout=10)
    assert [r.content.split()[0] for r in results] == [reel.alice.mention, reel.bob.mention]
    edited = reel.env.backend.get_message(queued.response.channel_id, queued.response.id)
    assert not edited.components  # no Cancel once it was sent to APIMart


# -- usage, balance, alerts ----------------------------------------------------------------


async def test_video_usage_shows_spend_allowance_and_open_jobs(reel: Reel, mod: Any) -> None:
    await admin(reel, mod, "limit", name="member_daily_spend", value="1")
    await reel.alice.slash(reel.channel, "video sora", prompt="a kite", duration=8)
    await reel.wait_results()
    result = await reel.alice.slash(reel.channel, "video usage")
    assert result.ephemeral
    fields = {f.name: f.value for f in result.response.embeds[0].fields}
    assert fields["Today"].startswith("$0.08 of $1.00 · $0.92 left · resets <t:")
    assert fields["Your open jobs"] == "none"


async def test_usage_csv_sums_to_the_embeds_totals(reel: Reel, mod: Any) -> None:
    await reel.alice.slash(reel.channel, "video sora", prompt="a", model="sora-2-pro", duration=12)
    await reel.bob.slash(reel.channel, "video omni", prompt="b", resolution="4k")
    await reel.alice.slash(reel.channel, "video veo", prompt="c", duration=4)
    await reel.wait_results(3, timeout=10)
    result = await admin(reel, mod, "usage", period="month")
    assert result.ephemeral
    embed = result.response.embeds[0]
    (attachment,) = result.response.attachments
    rows = list(csv.DictReader(io.StringIO((await attachment.read()).decode())))
    total = sum(Decimal(r["total_usd"]) for r in rows)
    shown = Decimal(embed.description.split("**Total $")[1].split("**")[0])
    assert total == shown == Decimal("0.36") + Decimal("0.48") + Decimal("0.2")
    assert sum(int(r["jobs"]) for r in rows) == 3
    by_member = embed.fields[0].value
    assert by_member.splitlines()[0].startswith(f"1. {reel.alice.mention} $0.56")


async def test_balance_and_alerts(reel: Reel, mod: Any) -> None:
    result = await admin(reel, mod, "balance")
    answer = result.followups[0] if result.followups else result.response
    assert answer.ephemeral and "Remaining: **100**" in answer.embeds[0].description
    alerts = reel.guild.create_text_channel("alerts")
    await admin(reel, mod, "alerts", channel=alerts)
    await admin(reel, mod, "limit", name="server_daily_spend", value="0.05")
    await reel.alice.slash(reel.channel, "video sora", prompt="a kite")  # learns $0.04
    await reel.wait_results()
    controls = reel.runtime.controls
    assert controls is not None
    await reel.wait_for(lambda: alerts.history())
    (first,) = [m.content for m in alerts.history()]
    assert "80 %" in first and "$0.04 of $0.05" in first
    await reel.bob.slash(reel.channel, "video sora", prompt="another")  # refused: 100 %
    await controls.settle_alerts()
    await reel.env.settle()
    posted = [m.content for m in alerts.history()]
    assert any("100 %" in m and "server_daily_spend" in m for m in posted), posted


async def test_the_apis_moderation_refusal_is_said_in_plain_words(reel: Reel) -> None:
    reel.fake.default_plan = FakeTaskPlan(
        fail=True, error_message="内容审核未通过 (content_policy)"
    )
    await reel.alice.slash(reel.channel, "video sora", prompt="something")
    (message,) = await reel.wait_results()
    text = message.embeds[0].description
    assert text.startswith("The video service refused this request because of its content")
    assert "Nothing was charged" in text and "内容审核未通过" in text  # the API's words kept


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("member_cooldown_seconds", "600", "you can start another <t:"),
        ("member_daily_jobs", "1", "0 left. Resets <t:"),
        ("member_monthly_spend", "0.05", "your monthly spending limit ($0.05): $0.01 left"),
        ("server_daily_spend", "0.05", "this server's daily spending limit ($0.05): $0.01 left"),
        ("server_monthly_spend", "0.05", "this server's monthly spending limit ($0.05)"),
    ],
)
async def test_each_limit_refuses_the_next_request_privately(
    reel: Reel, mod: Any, name: str, value: str, expected: str
) -> None:
    await admin(reel, mod, "limit", name=name, value=value)
    first = await reel.alice.slash(reel.channel, "video sora", prompt="first")
    assert not first.ephemeral
    await reel.wait_results()
    second = await reel.alice.slash(reel.channel, "video sora", prompt="second")
    assert second.ephemeral and expected in second.response.content, second.response.content
    assert not deferred_publicly(reel) and len(reel.fake.submits) == 1


async def test_an_unknown_price_under_a_cap_lets_one_job_learn_it(reel: Reel, mod: Any) -> None:
    await admin(reel, mod, "limit", name="server_daily_spend", value="5")
    reel.fake.default_plan = FakeTaskPlan(duration_s=3000.0)
    await reel.alice.slash(reel.channel, "video sora", prompt="first")
    second = await reel.bob.slash(reel.channel, "video sora", prompt="second")
    assert second.ephemeral and "does not know this video's price yet" in second.response.content
    assert len(reel.fake.submits) == 1


async def test_queued_status_messages_show_the_queue_moving(reel: Reel, mod: Any) -> None:
    await admin(reel, mod, "limit", name="server_concurrent", value="1")
    reel.fake.default_plan = FakeTaskPlan(duration_s=4000.0)
    carol = reel.guild.add_member(reel.env.create_user("carol"))
    await reel.alice.slash(reel.channel, "video sora", prompt="first")
    bobs = await reel.bob.slash(reel.channel, "video sora", prompt="second")
    carols = await carol.slash(reel.channel, "video sora", prompt="third")
    status = carols.response.message
    assert "queued (position 2)" in status.embeds[0].description
    custom_id = cancel_id(bobs.response.message)
    assert custom_id is not None
    await reel.bob.click(bobs.response.message, custom_id=custom_id)

    def carols_status() -> Any:
        return reel.env.backend.get_message(status.channel.id, status.id)

    await reel.wait_for(lambda: "position 1" in str(carols_status().embeds))
    assert carols_status().components  # its Cancel button is kept
