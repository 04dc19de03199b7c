"""`/video` end to end through simcord: real discord.py objects, the real runtime, the stand-in API.

What a member would notice: what reaches APIMart (`fake.submits`), what is refused before
anything is sent, what the result message shows and whom it pings, and the buttons.
"""

from __future__ import annotations

import discord
import pytest

from bot.core.catalog import CATALOG
from bot.discord import render
from bot.testing.fake_apimart import FakeTaskPlan
from tests.discordfix import (  # noqa: F401 - fixtures
    PNG,
    Reel,
    bot_fixture,
    env_fixture,
    notifier_options_fixture,
    reel_fixture,
    runtime_fixture,
    simcord_bot_fixture,
)


def deferred_publicly(reel: Reel) -> bool:
    """The last interaction was acknowledged with a public "thinking…" (type 5, no flags)."""
    callbacks = [r for r in reel.env.http_requests if r.path.endswith("/callback")]
    return bool(callbacks) and callbacks[-1].json == {"type": 5}


async def test_omni_choices_and_image_reach_the_api(reel: Reel) -> None:
    result = await reel.alice.slash(
        reel.channel,
        "video omni",
        prompt="a paper boat",
        duration=10,
        resolution="1080p",
        aspect_ratio="9:16",
        mode="frame",
        image=("boat.png", PNG),
    )
    assert deferred_publicly(reel) and not result.ephemeral
    (body,) = reel.fake.submits
    (uploaded,) = reel.fake.uploads.values()
    assert uploaded == PNG
    assert body == {
        "model": "Omni-Flash-Ext",
        "prompt": "a paper boat",
        "duration": 10,
        "resolution": "1080p",
        "aspect_ratio": "9:16",
        "image_urls": [body["image_urls"][0]],
        "generation_type": "frame",
    }
    assert "/uploads/" in body["image_urls"][0]
    # The deferred reply became the job's status message.
    status = result.response
    assert status is not None and "Omni Flash" in status.embeds[0].title
    (result_message,) = await reel.wait_results()
    assert result_message.attachments[0].filename.endswith(".mp4")


async def test_omitted_options_are_not_sent(reel: Reel) -> None:
    await reel.alice.slash(reel.channel, "video omni", prompt="just text")
    await reel.alice.slash(reel.channel, "video veo", prompt="just text")
    await reel.alice.slash(reel.channel, "video sora", prompt="just text")
    # A member runs two jobs at once by default; the third waits in the queue for a slot.
    await reel.wait_for(lambda: len(reel.fake.submits) == 3)
    assert reel.fake.submits == [
        {"model": "Omni-Flash-Ext", "prompt": "just text"},
        {"model": "veo3.1-fast-official", "prompt": "just text"},
        {"model": "sora-2", "prompt": "just text"},
    ]


async def test_veo_every_option(reel: Reel) -> None:
    await reel.alice.slash(
        reel.channel,
        "video veo",
        prompt="sunrise",
        quality="quality",
        duration=4,
        resolution="4K",
        aspect_ratio="9:16",
        first_frame=("first.png", PNG),
        last_frame=("last.png", PNG + b"2"),
        negative_prompt="no text",
        seed=4_294_967_295,
        audio=True,
        people="disallow",
        resize="crop",
    )
    (body,) = reel.fake.submits
    first, last = body.pop("first_frame_image"), body.pop("last_frame_image")
    assert reel.fake.uploads[first.rsplit("/", 1)[1]] == PNG
    assert reel.fake.uploads[last.rsplit("/", 1)[1]] == PNG + b"2"
    assert body == {
        "model": "veo3.1-quality-official",
        "prompt": "sunrise",
        "duration": 4,
        "resolution": "4K",
        "aspect_ratio": "9:16",
        "negative_prompt": "no text",
        "seed": 4_294_967_295,
        "generate_audio": True,
        "person_generation": "disallow",
        "resize_mode": "crop",
    }


async def test_sora_pro_and_image(reel: Reel) -> None:
    await reel.alice.slash(
        reel.channel,
        "video sora",
        prompt="a drone shot",
        model="sora-2-pro",
        duration=12,
        resolution="1080p",
        image=("ref.png", PNG),
    )
    (body,) = reel.fake.submits
    assert body["model"] == "sora-2-pro"
    assert (body["duration"], body["resolution"], len(body["image_urls"])) == (12, "1080p", 1)


async def test_reference_video_is_passed_by_its_url(reel: Reel) -> None:
    await reel.alice.slash(
        reel.channel,
        "video omni",
        prompt="dance like this",
        reference_video=("moves.mp4", b"\x00" * 32),
    )
    (body,) = reel.fake.submits
    assert body["video_urls"][0].endswith("/moves.mp4")
    assert "duration" not in body


BIG = b"\x00" * (10 * 1024 * 1024 + 1)


@pytest.mark.parametrize(
    ("command", "options", "expected"),
    [
        ("video sora", {"resolution": "1080p"}, ["resolution", "720p"]),
        ("video omni", {"image": ("a.png", PNG), "image2": ("b.png", PNG)}, ["images", "1 or 3"]),
        ("video veo", {"last_frame": ("b.png", PNG)}, ["last_frame", "first frame"]),
        ("video omni", {"image": ("doc.pdf", b"%PDF-1.4")}, ["application/pdf", "jpeg"]),
        ("video sora", {"image": ("huge.png", BIG)}, ["10 MB"]),
        (
            "video omni",
            {"reference_video": ("notes.txt", b"hi")},
            ["reference_video", "not a video"],
        ),
        ("video omni", {"reference_video": ("m.mp4", b"x"), "duration": 6}, ["duration"]),
    ],
)
async def test_impossible_requests_are_refused_privately(
    reel: Reel, command: str, options: dict[str, object], expected: list[str]
) -> None:
    result = await reel.alice.slash(reel.channel, command, prompt="anything", **options)
    assert result.ephemeral
    assert result.response is not None
    for word in expected:
        assert word in result.response.content
    assert reel.fake.submit_attempts == []
    assert reel.fake.uploads == {}
    assert await reel.runtime.store.recent() == []


async def test_result_pings_only_the_requester_and_shows_link_and_cost(reel: Reel) -> None:
    role = reel.guild.create_role("Everyone-ish", mentionable=True)
    prompt = f"@everyone @here {role.mention} <@{reel.bob.id}> a fireworks show"
    await reel.alice.slash(reel.channel, "video sora", prompt=prompt)
    (message,) = await reel.wait_results()
    raw = reel.raw(message)
    assert raw.ping_user_ids == [reel.alice.id]
    assert raw.ping_role_ids == []
    assert raw.mention_everyone is False
    embed = message.embeds[0]
    assert reel.fake.submits and "/files/" in embed.description
    assert "<t:" in embed.description
    cost = next(f.value for f in embed.fields if f.name == "Cost")
    assert "credits" in cost
    assert {f.name for f in embed.fields} >= {"Model", "Duration", "Resolution", "Elapsed"}
    # The status message reached its final state too.
    status = reel.messages()[0]
    assert "100%" in status.embeds[0].description and "done" in status.embeds[0].description


async def test_failed_job_says_why_and_not_charged(reel: Reel) -> None:
    reel.fake.plan_next(FakeTaskPlan(duration_s=60, fail=True, error_message="content moderation"))
    await reel.alice.slash(reel.channel, "video sora", prompt="something odd")
    (message,) = await reel.wait_results()
    assert "could not be made" in message.content
    embed = message.embeds[0]
    assert "content moderation" in embed.description
    assert next(f.value for f in embed.fields if f.name == "Cost") == "not charged"


async def test_empty_balance_is_explained(reel: Reel) -> None:
    reel.fake.inject("submit", 402)
    await reel.alice.slash(reel.channel, "video sora", prompt="anything")
    (message,) = await reel.wait_results()
    assert "balance" in message.embeds[0].description
    assert "not charged" in message.embeds[0].fields[-1].value


async def test_reroll_and_details_buttons(reel: Reel) -> None:
    await reel.alice.slash(reel.channel, "video sora", prompt="a red kite", duration=8)
    (message,) = await reel.wait_results()
    job = (await reel.runtime.store.recent())[0]

    refused = await reel.bob.click(message, custom_id=f"reelbot:reroll:{job.id}")
    assert refused.ephemeral and "Only the member" in refused.response.content
    assert len(reel.fake.submits) == 1

    details = await reel.bob.click(message, custom_id=f"reelbot:details:{job.id}")
    assert details.ephemeral
    assert job.task_id in str(details.response.embeds[0].to_dict())

    again = await reel.alice.click(message, custom_id=f"reelbot:reroll:{job.id}")
    assert deferred_publicly(reel) and not again.ephemeral
    assert reel.fake.submits == [reel.fake.submits[0]] * 2
    results = await reel.wait_results(2)
    assert len(results) == 2


async def test_jobs_and_models_are_private(reel: Reel) -> None:
    await reel.alice.slash(reel.channel, "video sora", prompt="one")
    await reel.wait_results()
    mine = await reel.alice.slash(reel.channel, "video jobs")
    assert mine.ephemeral
    text = mine.response.embeds[0].description
    assert "#1" in text and "sora-2" in text and "[video](" in text
    theirs = await reel.bob.slash(reel.channel, "video jobs")
    assert theirs.ephemeral and "no video jobs" in theirs.response.content

    models = await reel.alice.slash(reel.channel, "video models")
    assert models.ephemeral
    names = " ".join(f.name for f in models.response.embeds[0].fields)
    assert all(model_id in names for model_id in CATALOG)


async def test_a_job_longer_than_the_interaction_token_still_finishes(reel: Reel) -> None:
    """After 15 minutes only the bot token works: edits and the result must use it."""
    reel.fake.plan_next(FakeTaskPlan(duration_s=3600))
    result = await reel.alice.slash(reel.channel, "video sora", prompt="a long take")
    await reel.env.advance_time(16 * 60)
    # From now on the interaction webhook refuses, as Discord does after 15 minutes.
    reel.env.inject_error(
        "*", "/webhooks/*", status=401, code=50027, message="Invalid Webhook Token", times=None
    )
    before = len(reel.env.http_requests)
    status_id = result.response.id

    def progressed() -> bool:
        description = reel.channel.history()[0].embeds[0].description
        return "  0%" not in description

    await reel.wait_for(progressed)
    (task_id,) = reel.fake.tasks
    reel.fake.complete_now(task_id)
    (message,) = await reel.wait_results()
    assert message.attachments
    later = reel.env.http_requests[before:]
    assert not [r for r in later if r.path.startswith("/webhooks/")]
    assert any(r.method == "PATCH" and r.path.endswith(f"/messages/{status_id}") for r in later)
    assert "done" in reel.channel.history()[0].embeds[0].description


async def test_unexpected_errors_give_the_member_an_error_id(
    reel: Reel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(**_kw: object) -> list[object]:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(reel.runtime.store, "recent", broken)
    result = await reel.alice.slash(reel.channel, "video jobs")
    assert result.ephemeral
    assert result.response is not None and "Error id" in result.response.content
    error_id = result.response.content.split("`")[1]
    assert error_id in caplog.text and "database on fire" in caplog.text
    assert [type(e) for e in reel.env.errors] != []  # seen by simcord; acknowledged here


async def test_after_a_restart_buttons_work_and_missed_results_are_posted_once(
    reel: Reel,
) -> None:
    from bot.core.job import JobState
    from bot.core.request import build_request
    from bot.discord.bot import ReelBot

    await reel.alice.slash(reel.channel, "video sora", prompt="before the restart")
    (old,) = await reel.wait_results()
    # A job that finished while the bot was away: in the store, never delivered.
    store = reel.runtime.store
    missed = await store.create(
        build_request(model="sora-2", prompt="finished while away"),
        now=reel.runtime.clock.now(),
        origin={"kind": "discord", "channel_id": str(reel.channel.id)},
        requester=str(reel.alice.id),
    )
    await store.update(
        missed,
        state=JobState.FAILED,
        finished_at=reel.runtime.clock.now(),
        cost=0.0,
        error_message="upstream timeout",
    )

    await reel.env.restart_bot(ReelBot(runtime=reel.runtime))
    await reel.wait_results(2)
    await reel.env.settle()
    results = reel.results()
    assert len(results) == 2 and "finished while away" in results[1].content
    assert (await store.get(missed.id)).delivered  # type: ignore[union-attr]

    details = await reel.bob.click(old, custom_id="reelbot:details:1")
    assert details.ephemeral and "Task id" in str(details.response.embeds[0].to_dict())


# -- re-roll safety -------------------------------------------------------------------------

HOUR = 3600.0


def reroll_id(message: discord.Message) -> str | None:
    """The Re-roll button's custom_id under a message, if it has one."""
    ids = [getattr(c, "custom_id", None) for row in message.components for c in row.children]  # type: ignore[union-attr]
    return next((i for i in ids if i and i.startswith("reelbot:reroll:")), None)


async def test_unconfirmed_job_offers_no_reroll_and_refuses_an_old_button(reel: Reel) -> None:
    from bot.core.job import JobState

    reel.fake.inject("submit", 502, accept=True)  # APIMart took it, the answer was lost
    await reel.alice.slash(reel.channel, "video sora", prompt="maybe billed")
    (message,) = await reel.wait_results()
    assert "not confirmed" in message.content
    assert reroll_id(message) is None
    assert len(reel.fake.submit_attempts) == 1

    # A result posted before this rule (it still has the button), whose job is unknown.
    await reel.alice.slash(reel.channel, "video sora", prompt="older one")
    _, older = await reel.wait_results(2)
    job = (await reel.runtime.store.recent())[0]
    await reel.runtime.store.update(job, state=JobState.UNKNOWN)
    click = await reel.alice.click(older, custom_id=f"reelbot:reroll:{job.id}")
    assert click.ephemeral and "charge twice" in click.response.content
    assert len(reel.fake.submit_attempts) == 2


@pytest.mark.parametrize(
    ("options", "age_hours", "words"),
    [
        ({"image": ("ref.png", PNG)}, 71, ["images", "72 hours", "fresh attachments"]),
        ({"reference_video": ("m.mp4", b"\x00" * 32)}, 21, ["reference video", "fresh"]),
    ],
)
async def test_reroll_refuses_expired_attachments(
    reel: Reel, options: dict[str, object], age_hours: float, words: list[str]
) -> None:
    command = "video sora" if "image" in options else "video omni"
    await reel.alice.slash(reel.channel, command, prompt="from a picture", **options)
    (message,) = await reel.wait_results()
    job = (await reel.runtime.store.recent())[0]
    # Just inside the limit the re-roll goes ahead …
    fresh = reel.runtime.clock.now() - (age_hours - 2) * HOUR
    await reel.runtime.store.update(job, origin={**job.origin, "media_at": fresh})
    ok = await reel.alice.click(message, custom_id=f"reelbot:reroll:{job.id}")
    assert not ok.ephemeral and len(reel.fake.submits) == 2
    await reel.wait_results(2)
    # … past it, it is refused with the reason, and nothing is sent.
    stale = reel.runtime.clock.now() - age_hours * HOUR
    await reel.runtime.store.update(job, origin={**job.origin, "media_at": stale})
    reel.runtime.jobs.rerolls._started.clear()  # not a double click
    refused = await reel.alice.click(message, custom_id=f"reelbot:reroll:{job.id}")
    assert refused.ephemeral
    for word in words:
        assert word in refused.response.content
    assert f"/video {'sora' if command == 'video sora' else 'omni'}" in refused.response.content
    assert len(reel.fake.submits) == 2


async def test_a_rerolled_job_keeps_the_age_of_its_images(reel: Reel) -> None:
    await reel.alice.slash(reel.channel, "video sora", prompt="kite", image=("k.png", PNG))
    (message,) = await reel.wait_results()
    job = (await reel.runtime.store.recent())[0]
    await reel.alice.click(message, custom_id=f"reelbot:reroll:{job.id}")
    await reel.wait_results(2)
    rerolled = (await reel.runtime.store.recent())[0]
    assert rerolled.id != job.id
    assert rerolled.origin["media_at"] == job.origin["media_at"]


async def test_double_click_on_reroll_submits_once(reel: Reel) -> None:
    await reel.alice.slash(reel.channel, "video sora", prompt="a red kite")
    (message,) = await reel.wait_results()
    custom_id = reroll_id(message)
    assert custom_id is not None
    first = await reel.alice.click(message, custom_id=custom_id)
    second = await reel.alice.click(message, custom_id=custom_id)
    assert not first.ephemeral
    assert second.ephemeral and "Already re-rolling" in second.response.content
    assert len(reel.fake.submits) == 2
    # Someone else's refusal does not block the requester, nor the other way round.
    other = await reel.bob.click(message, custom_id=custom_id)
    assert other.ephemeral and "Only the member" in other.response.content


# -- errors in buttons and after a public defer ---------------------------------------------


async def test_button_errors_give_an_error_id(
    reel: Reel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await reel.alice.slash(reel.channel, "video sora", prompt="a red kite")
    (message,) = await reel.wait_results()

    async def broken(_job_id: int) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(reel.runtime.store, "get", broken)
    click = await reel.bob.click(message, custom_id="reelbot:details:1")
    assert click.ephemeral and "Error id" in click.response.content
    error_id = click.response.content.split("`")[1]
    assert error_id in caplog.text and "database on fire" in caplog.text


async def test_a_reroll_failing_after_its_defer_leaves_nothing_public(
    reel: Reel, monkeypatch: pytest.MonkeyPatch
) -> None:
    await reel.alice.slash(reel.channel, "video sora", prompt="a red kite")
    (message,) = await reel.wait_results()
    before = {m.id for m in reel.messages()}

    def broken(*_a: object, **_kw: object) -> None:
        raise RuntimeError("database on fire")

    # Fails after the public defer (admission, before it, went through).
    monkeypatch.setattr(render, "status", broken)
    click = await reel.alice.click(message, custom_id="reelbot:reroll:1")
    # No public "thinking…" (or error) stays in the channel; the requester alone is told.
    assert {m.id for m in reel.channel.history(viewer=reel.bob)} == before
    (followup,) = click.followups
    assert followup.ephemeral and "Error id" in followup.content
    assert len(reel.fake.submits) == 1


async def test_an_error_after_the_public_defer_is_shown_only_to_the_member(
    reel: Reel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: object, **_kw: object) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(render, "status", broken)
    result = await reel.alice.slash(reel.channel, "video sora", prompt="anything")
    assert reel.channel.history(viewer=reel.bob) == []
    (followup,) = result.followups
    assert followup.ephemeral and "Error id" in followup.content
    assert reel.fake.submit_attempts == []
    assert reel.env.errors  # seen by simcord; acknowledged here
    # The job admitted before the defer gave its slot back: nothing is left running.
    (job,) = await reel.runtime.store.recent()
    assert job.state.value == "failed" and job.error_code == "interrupted"


# -- where the bot may run ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deny", "named"),
    [
        ({"embed_links": False}, ["Embed Links"]),
        ({"send_messages": False, "embed_links": False}, ["Send Messages", "Embed Links"]),
    ],
)
async def test_no_job_where_the_bot_cannot_post_the_result(
    reel: Reel, deny: dict[str, bool], named: list[str]
) -> None:
    channel = reel.guild.create_text_channel(
        "locked", overwrites={reel.guild.me: discord.PermissionOverwrite(**deny)}
    )
    result = await reel.alice.slash(
        channel, "video sora", prompt="anything", image=("ref.png", PNG)
    )
    assert result.ephemeral and result.response is not None
    for name in named:
        assert f"**{name}**" in result.response.content
    assert reel.fake.submit_attempts == [] and reel.fake.uploads == {}
    assert await reel.runtime.store.recent() == []
    assert channel.history() == []


async def test_attach_files_is_not_needed(reel: Reel) -> None:
    channel = reel.guild.create_text_channel(
        "no-files", overwrites={reel.guild.me: discord.PermissionOverwrite(attach_files=False)}
    )
    result = await reel.alice.slash(channel, "video sora", prompt="a link will do")
    assert not result.ephemeral and len(reel.fake.submits) == 1


def test_threads_need_send_messages_in_threads() -> None:
    from types import SimpleNamespace

    from bot.discord.flow import missing_permissions

    def missing(channel_type: discord.ChannelType, **perms: bool) -> list[str]:
        interaction = SimpleNamespace(
            app_permissions=discord.Permissions(view_channel=True, embed_links=True, **perms),
            channel=SimpleNamespace(type=channel_type),
        )
        return missing_permissions(interaction)  # type: ignore[arg-type]

    thread = discord.ChannelType.public_thread
    assert missing(thread, send_messages=True) == ["Send Messages in Threads"]
    assert missing(thread, send_messages_in_threads=True) == []
    assert missing(discord.ChannelType.text, send_messages_in_threads=True) == ["Send Messages"]


async def test_video_commands_are_not_offered_in_dms(reel: Reel) -> None:
    from simcord import SetupError

    stranger = reel.env.create_user("stranger")
    reel.guild.add_member(stranger)
    with pytest.raises(SetupError, match="context"):
        await stranger.slash("video sora", prompt="on someone else's balance")
    assert reel.fake.submit_attempts == []
