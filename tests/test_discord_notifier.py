"""The Discord notifier's fallbacks and throttle, against real discord.py objects (simcord).

A job is started through `/video sora` (so it has a real status message and a live
interaction) with a task that will not end during the test; the test then hands the
notifier a finished copy of it, from the test's own context, and looks at the channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import discord
import pytest
from aiohttp import web

from bot.core.job import Job, JobState
from bot.discord.notifier import DiscordNotifier, EditThrottle
from bot.testing.clock import ManualClock
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

VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 2048


@pytest.fixture
async def video_url(aiohttp_server: Any) -> str:
    async def video(_request: web.Request) -> web.Response:
        return web.Response(body=VIDEO, content_type="video/mp4")

    app = web.Application()
    app.router.add_get("/v.mp4", video)
    server = await aiohttp_server(app)
    return str(server.make_url("/v.mp4"))


async def finished_job(reel: Reel, video_url: str, **origin: Any) -> Job:
    reel.fake.plan_next(FakeTaskPlan(duration_s=36_000))
    await reel.alice.slash(reel.channel, "video sora", prompt="a quiet lake")
    job = (await reel.runtime.store.recent())[0]
    assert job.state is JobState.RUNNING
    return dataclasses.replace(
        job,
        state=JobState.COMPLETED,
        progress=100,
        video_urls=[video_url],
        expires_at=job.created_at + 86_400,
        finished_at=job.created_at + 90,
        cost=0.4,
        credits_cost=4.0,
        origin={**job.origin, **origin},
    )


def notifier(reel: Reel) -> DiscordNotifier:
    assert reel.bot.notifier is not None
    return reel.bot.notifier


async def deliver(reel: Reel, job: Job) -> None:
    await notifier(reel).job_finished(job)
    await reel.env.settle()


async def test_video_is_attached_when_it_fits(reel: Reel, video_url: str) -> None:
    await deliver(reel, await finished_job(reel, video_url))
    (message,) = reel.results()
    assert [a.filename for a in message.attachments] == [f"reelbot-{1}.mp4"]
    assert await message.attachments[0].read() == VIDEO
    assert video_url in message.embeds[0].description


async def test_too_large_for_the_server_goes_as_a_link(reel: Reel, video_url: str) -> None:
    await deliver(reel, await finished_job(reel, video_url, upload_limit=100))
    (message,) = reel.results()
    assert message.attachments == []
    assert f"Download: {video_url}" in message.embeds[0].description


async def test_413_from_discord_falls_back_to_the_link(reel: Reel, video_url: str) -> None:
    job = await finished_job(reel, video_url)
    reel.env.inject_error(
        "POST", "/channels/*/messages", status=413, code=40005, message="Request entity too large"
    )
    await deliver(reel, job)
    (message,) = reel.results()
    assert message.attachments == [] and video_url in message.embeds[0].description


async def test_no_attach_permission_retries_without_the_file(reel: Reel, video_url: str) -> None:
    job = await finished_job(reel, video_url)
    reel.env.inject_error(
        "POST", "/channels/*/messages", status=403, code=50013, message="Missing Permissions"
    )
    await deliver(reel, job)
    (message,) = reel.results()
    assert message.attachments == []


async def test_no_send_permission_answers_through_the_interaction(
    reel: Reel, video_url: str
) -> None:
    job = await finished_job(reel, video_url)
    reel.env.inject_error(
        "POST",
        "/channels/*/messages",
        status=403,
        code=50013,
        message="Missing Permissions",
        times=None,
    )
    await deliver(reel, job)
    followups = [
        r for r in reel.env.http_requests if r.method == "POST" and r.path.startswith("/webhooks/")
    ]
    assert len(followups) == 1
    mentions = followups[0].json["allowed_mentions"]
    assert mentions["parse"] == [] and [int(u) for u in mentions["users"]] == [reel.alice.id]
    assert "your video is ready" in followups[0].json["content"]


async def test_no_permission_and_expired_token_is_logged_not_raised(
    reel: Reel, video_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = await finished_job(reel, video_url)
    await reel.env.advance_time(16 * 60)
    reel.env.inject_error(
        "POST",
        "/channels/*/messages",
        status=403,
        code=50013,
        message="Missing Permissions",
        times=None,
    )
    with caplog.at_level(logging.ERROR, logger="bot.discord.notifier"):
        await deliver(reel, job)
    assert not [
        r for r in reel.env.http_requests if r.method == "POST" and r.path.startswith("/webhooks/")
    ]
    assert "interaction has expired" in caplog.text


async def test_deleted_channel_counts_as_delivered(reel: Reel, video_url: str) -> None:
    job = await finished_job(reel, video_url)
    reel.env.inject_error(
        "*", "/channels/*", status=404, code=10003, message="Unknown Channel", times=None
    )
    await deliver(reel, job)  # no exception: the poller marks it delivered
    assert reel.results() == []


async def test_discord_outage_is_raised_for_a_retry(reel: Reel, video_url: str) -> None:
    job = await finished_job(reel, video_url)
    reel.env.inject_error("POST", "/channels/*/messages", status=503, message="upstream", times=1)
    with pytest.raises(discord.HTTPException):
        await notifier(reel).job_finished(job)
    await deliver(reel, job)  # the retry lands
    assert len(reel.results()) == 1


def test_throttle_per_message_and_overall() -> None:
    clock = ManualClock(start=1000.0)
    per_message = EditThrottle(clock, interval=10.0, rate=100.0)
    assert [per_message.allow(1) for _ in range(5)] == [True, False, False, False, False]
    assert per_message.allow(2)
    clock._now += 10.0
    assert per_message.allow(1)

    overall = EditThrottle(clock, interval=0.0, rate=2.0, burst=2.0)
    assert sum(overall.allow(job_id) for job_id in range(50)) == 2
    clock._now += 1.0
    assert sum(overall.allow(job_id) for job_id in range(50, 100)) == 2


async def test_progress_edits_are_throttled_on_discord(reel: Reel, video_url: str) -> None:
    job = await finished_job(reel, video_url)
    running = dataclasses.replace(job, state=JobState.RUNNING, progress=10)
    clock = ManualClock(start=1000.0)
    throttled = DiscordNotifier(
        reel.bot,
        session=reel.runtime.fetch_session,
        clock=clock,
        edit_interval=10.0,
        edits_per_second=1.0,
    )
    status_path = f"/channels/{reel.channel.id}/messages/{job.origin['message_id']}"

    def edits() -> int:
        return sum(
            1 for r in reel.env.http_requests if r.method == "PATCH" and r.path == status_path
        )

    before = edits()
    for percent in range(10, 60, 5):
        running.progress = percent
        await throttled.job_progress(running)
    await throttled.wait_for_edits()
    assert edits() - before == 1
    clock._now += 10.0
    for percent in range(60, 90, 5):
        running.progress = percent
        await throttled.job_progress(running)
    await throttled.wait_for_edits()
    assert edits() - before == 2
    await reel.env.settle()


def test_throttle_per_channel() -> None:
    """Several jobs in one channel: about one edit a second there, whatever the job count."""
    clock = ManualClock(start=1000.0)
    throttle = EditThrottle(clock, interval=10.0, rate=100.0, channel_interval=1.0)
    assert [throttle.allow(job_id, channel=7) for job_id in range(5)] == [True] + [False] * 4
    assert throttle.allow(99, channel=8)  # another channel is not held back
    clock._now += 1.0
    assert [throttle.allow(job_id, channel=7) for job_id in range(1, 5)] == [True] + [False] * 3


def hold_edits(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """From now on Discord holds every channel-message edit (a rate limit) until the event."""
    release = asyncio.Event()
    edit = discord.PartialMessage.edit

    async def held(self: discord.PartialMessage, **kwargs: Any) -> Any:
        await release.wait()
        return await edit(self, **kwargs)

    monkeypatch.setattr(discord.PartialMessage, "edit", held)
    return release


async def test_progress_never_waits_for_a_held_edit_and_never_queues(
    reel: Reel, video_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await finished_job(reel, video_url)
    held_edits = hold_edits(monkeypatch)
    running = dataclasses.replace(job, state=JobState.RUNNING, progress=10)
    fast = DiscordNotifier(
        reel.bot,
        session=reel.runtime.fetch_session,
        clock=ManualClock(start=1000.0),
        edit_interval=0.0,
        channel_edit_interval=0.0,
        edits_per_second=1000.0,
    )
    status_path = f"/channels/{reel.channel.id}/messages/{job.origin['message_id']}"
    before = len([r for r in reel.env.http_requests if r.path == status_path])
    async with asyncio.timeout(1.0):  # the poller's slot is free again at once
        for percent in range(10, 100, 10):
            running.progress = percent
            await fast.job_progress(running)
    held_edits.set()
    await fast.wait_for_edits()
    patches = [r for r in reel.env.http_requests if r.path == status_path][before:]
    assert len(patches) == 1  # the rest were skipped while it was held, not queued
    running.progress = 95
    await fast.job_progress(running)
    await fast.wait_for_edits()
    assert "95%" in reel.channel.history()[0].embeds[0].description
    await fast.close()


async def test_a_failing_final_status_edit_still_counts_as_delivered(
    reel: Reel, video_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """discord.py's session closed under the last edit (shutdown): the result is posted once."""
    job = await finished_job(reel, video_url)

    async def closed(self: discord.PartialMessage, **kwargs: Any) -> Any:
        raise RuntimeError("Session is closed")

    monkeypatch.setattr(discord.PartialMessage, "edit", closed)
    await reel.runtime.poller.deliver(job)
    await reel.env.settle()
    assert len(reel.results()) == 1
    stored = await reel.runtime.store.get(job.id)
    assert stored is not None and stored.delivered


async def test_shutdown_during_the_final_edit_keeps_the_delivery(
    reel: Reel, video_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller's drain cancels a delivery stuck in its final edit: still delivered once."""
    job = await finished_job(reel, video_url)
    held_edits = hold_edits(monkeypatch)
    delivery = asyncio.create_task(reel.runtime.poller.deliver(job))
    await reel.wait_for(lambda: reel.results())
    await asyncio.sleep(0.05)
    assert not delivery.done()  # held in the final status edit
    delivery.cancel()
    await delivery  # returns normally
    stored = await reel.runtime.store.get(job.id)
    assert stored is not None and stored.delivered
    assert len(reel.results()) == 1
    held_edits.set()
