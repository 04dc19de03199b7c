"""Item 10 (Discord, local files, result downloads): every read is bounded in size and time,
and the message names what happened ("timed out", "too large") instead of blaming Discord."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from aiohttp import web

from bot.core.fetch import FetchPolicy, FetchTimedOut, FetchTooLarge, fetch
from bot.testing.fake_discord import FakeDiscord
from tests.test_e2e import PNG, USER_ID, World, _wait, running_bot

LOCAL = FetchPolicy(allow_local=True)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def hanging(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3600)
    return web.Response()


async def huge_declared(request: web.Request) -> web.StreamResponse:
    """Declares 5 GB, sends a few bytes, then hangs: only the declared size can refuse it."""
    response = web.StreamResponse(headers={"Content-Length": str(5 * 1024**3)})
    await response.prepare(request)
    await response.write(b"\x00" * 1024)
    await asyncio.sleep(3600)
    return response


async def endless(request: web.Request) -> web.StreamResponse:
    """No length at all, and more bytes than anyone asked for."""
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(10_000):
        await response.write(b"\x00" * 65536)
    return response


@pytest.fixture
async def server_url(aiohttp_server: Any) -> str:
    app = web.Application()
    app.router.add_get("/hang", hanging)
    app.router.add_get("/huge", huge_declared)
    app.router.add_get("/endless", endless)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_a_hanging_server_times_out_and_says_so(
    session: aiohttp.ClientSession, server_url: str
) -> None:
    with pytest.raises(FetchTimedOut, match="timed out reading the attachment"):
        await fetch(
            session,
            f"{server_url}/hang",
            limit=1024,
            timeout=0.5,
            policy=LOCAL,
            what="the attachment",
        )


async def test_a_declared_size_over_the_cap_is_refused_before_reading(
    session: aiohttp.ClientSession, server_url: str
) -> None:
    async with asyncio.timeout(5):  # not the 3600 s the body would take
        with pytest.raises(FetchTooLarge, match="the video is too large"):
            await fetch(
                session,
                f"{server_url}/huge",
                limit=1024,
                timeout=60,
                policy=LOCAL,
                what="the video",
            )


async def test_an_undeclared_stream_stops_at_the_cap(
    session: aiohttp.ClientSession, server_url: str
) -> None:
    with pytest.raises(FetchTooLarge, match="too large"):
        await fetch(
            session, f"{server_url}/endless", limit=1 << 20, timeout=30, policy=LOCAL, what="x"
        )


async def test_a_hanging_discord_cdn_is_reported_as_a_timeout(
    session: aiohttp.ClientSession,
) -> None:
    """The bot's attachment reader against the fake Discord's CDN, which holds its answer."""
    from bot.discord.attachments import CdnReader

    fake = FakeDiscord()
    await fake.start()
    try:
        data = fake.add_attachment("fox.png", PNG, "image/png")
        fake.hold_next("GET", r"^/ephemeral-attachments/", 3600.0)
        policy = FetchPolicy(
            hosts=frozenset(), allow_local=True, extra_hosts=frozenset({f"127.0.0.1:{fake.port}"})
        )
        reader = CdnReader(session, policy, timeout=0.5)
        # No bot needed: the reader uses only the attachment's URL and declared size.
        state = types.SimpleNamespace(http=None)
        attachment = discord.Attachment(data=data, state=state)  # type: ignore[arg-type]
        with pytest.raises(FetchTimedOut, match="timed out reading the attachment"):
            await reader(attachment, 10 * 1024 * 1024)
    finally:
        await fake.close()


@pytest.mark.e2e
async def test_a_cdn_sending_more_than_the_attachment_declared_uploads_nothing(
    world: World,
) -> None:
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    interaction = world.slash_sora("a fox")
    attachment = interaction["data"]["resolved"]["attachments"]
    (declared,) = attachment.values()
    path = declared["url"].removeprefix(world.discord.cdn_base).split("?", 1)[0]
    world.discord._cdn[path] = (PNG + b"\x00" * (256 * 1024), "image/png")  # 256 KB more
    async with running_bot(world):
        await world.discord.dispatch("INTERACTION_CREATE", interaction)
        told = await _wait(
            lambda: [
                m
                for m in world.discord.bot_messages(world.channel_id)
                if str(USER_ID) in str(m.get("content"))
            ],
            30,
            "the requester to be told",
            world,
        )
    assert world.api.uploads == {} and world.api.submit_attempts == []
    assert "too large" in json.dumps(told)


def test_a_local_image_is_measured_before_it_is_read(tmp_path: Path) -> None:
    """A 4 GB (sparse) "PNG" under a 1.5 GB address-space limit: refused by size, exit 2,
    instead of reading it whole (MemoryError, a traceback)."""
    big = tmp_path / "big.png"
    with big.open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(4 * 1024**3)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1536 * 1024**2, 1536 * 1024**2))

    import subprocess

    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "generate", "--fake", "--image", str(big), "a fox"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        preexec_fn=limit_memory,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "too large" in done.stderr and "Traceback" not in done.stderr
