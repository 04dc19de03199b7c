"""Item 14: the bytes decide what an image is, on every path (one check in the core), and a
member's markdown is shown as typed, not rendered, in the bot's own messages."""

from __future__ import annotations

import io
import json
import re
import zipfile

from bot.core.job import Job, JobState
from bot.core.request import build_request
from bot.discord import render
from tests.discordfix import (  # noqa: F401 - fixtures
    Reel,
    bot_fixture,
    env_fixture,
    notifier_options_fixture,
    reel_fixture,
    runtime_fixture,
    simcord_bot_fixture,
)

#: `[text](url)` not preceded by a backslash: what Discord renders as a masked link.
MASKED_LINK = re.compile(r"(?<!\\)\[[^\]]*\]\(")


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("secret.txt", "not an image")
    return buffer.getvalue()


async def test_a_zip_attached_as_png_is_not_uploaded(reel: Reel) -> None:
    """Discord reports `image/png` for `cat.png` whatever it holds; the bytes say ZIP."""
    await reel.alice.slash(
        reel.channel, "video sora", prompt="a cat", image=("cat.png", zip_bytes())
    )
    (told,) = await reel.wait_results()
    assert reel.fake.uploads == {} and reel.fake.submit_attempts == []
    text = told.content + json.dumps([e.to_dict() for e in told.embeds])
    assert "cat.png" in text and "not an image" in text


def test_prompt_markdown_is_escaped_in_the_bots_messages() -> None:
    prompt = "# HUGE [free nitro](https://evil.example) **bold** @everyone"
    job = Job(
        id=7,
        state=JobState.COMPLETED,
        request=build_request(model="sora-2", prompt=prompt),
        created_at=0.0,
        requester="1",
        video_urls=["https://cdn.example/v.mp4"],
        cost=0.4,
    )
    for rendered in (render.status(job, 10.0), render.result(job, 10.0, attached=False)):
        text = (rendered.content or "") + "".join(e.description or "" for e in rendered.embeds)
        assert not MASKED_LINK.search(text)  # no masked link in the bot's name
        assert "free nitro" in text
        assert "> # HUGE" not in text and "**bold**" not in text
        assert "@everyone" not in text
    details = render.details(job).embeds[0].description or ""
    assert not MASKED_LINK.search(details) and "**bold**" not in details
