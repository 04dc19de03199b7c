"""Item 9: when the channel refuses the result and no interaction can carry it (always so
after a restart), the status message's final edit carries the link and the cost, and the
log says why Discord refused and where."""

from __future__ import annotations

import json
import logging

import pytest

from bot.discord.notifier import DiscordNotifier
from tests.discordfix import (  # noqa: F401 - fixtures
    Reel,
    bot_fixture,
    env_fixture,
    notifier_options_fixture,
    reel_fixture,
    runtime_fixture,
    simcord_bot_fixture,
)
from tests.test_discord_notifier import finished_job, video_url  # noqa: F401 - fixture


async def test_after_a_restart_a_refused_result_lands_in_the_status_message(
    reel: Reel,
    video_url: str,  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = await finished_job(reel, video_url)
    # A new process: the same bot, but a notifier that never saw the interaction.
    restarted = DiscordNotifier(
        reel.bot, session=reel.runtime.fetch_session, clock=reel.runtime.clock
    )
    reel.env.inject_error(
        "POST",
        "/channels/*/messages",
        status=403,
        code=50013,
        message="Missing Permissions",
        times=None,
    )
    with caplog.at_level(logging.INFO, logger="bot.discord.notifier"):
        await restarted.job_finished(job)
        await reel.env.settle()
    assert reel.results() == []  # nothing could be posted in the channel
    (status,) = [m for m in reel.messages() if m.id == int(job.origin["message_id"])]
    shown = json.dumps([e.to_dict() for e in status.embeds])
    assert video_url in shown
    assert "0.4" in shown  # the cost
    assert "missing permission" in caplog.text and "50013" in caplog.text
    assert str(reel.channel.id) in caplog.text
