"""The real `reelbot` process, as a user starts it, against a local Discord and APIMart.

`reelbot sync --guild` and `reelbot run` run as subprocesses; the fake Discord (gateway + REST
+ CDN) and the stand-in APIMart run in this test process on 127.0.0.1, so they outlive the bot
when it is killed and can count what reached them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan
from bot.testing.fake_discord import PERMISSIONS, FakeDiscord

API_KEY = "sk-e2e-secret-key-0123456789"
TOKEN = "e2e.discord.token.secret"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
USER_ID = 555_000_000_000_000_001

pytestmark = pytest.mark.e2e


class World:
    def __init__(self, discord: FakeDiscord, api: FakeApimart, api_url: str, tmp: Path) -> None:
        self.discord = discord
        self.api = api
        self.api_url = api_url
        self.tmp = tmp
        self.guild_id = next(iter(discord.guilds))
        self.channel_id = int(next(iter(discord.channels.values()))["id"])
        self.logs: list[Path] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "APIMART_"))}
        env.update(
            DISCORD_TOKEN=TOKEN,
            APIMART_API_KEY=API_KEY,
            APIMART_BASE_URL=self.api_url,
            DATABASE_URL=f"sqlite:///{self.tmp / 'reelbot.db'}",
            DISCORD_API_BASE=self.discord.rest_base,
            DISCORD_GATEWAY_URL=self.discord.gateway_url,
            POLL_INITIAL_DELAY="0.2",
            POLL_INTERVAL="0.2",
            POLL_MAX_INTERVAL="1",
            LOG_LEVEL="DEBUG",
            # The stand-ins' CDN and result videos are http://127.0.0.1 URLs.
            ALLOW_LOCAL_FETCH="1",
            # Any free port: several bots (and other test runs) share this machine.
            HTTP_LISTEN="127.0.0.1:0",
        )
        return env

    async def reelbot(self, *args: str) -> asyncio.subprocess.Process:
        log = self.tmp / f"reelbot-{len(self.logs)}.log"
        self.logs.append(log)
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            *args,
            cwd=self.tmp,
            env=self.env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log.open("wb"),
            stderr=asyncio.subprocess.STDOUT,
        )

    def all_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def slash_sora(self, prompt: str, **options: Any) -> dict[str, Any]:
        attachment = self.discord.add_attachment(
            "fox.png", PNG, "image/png", channel_id=self.channel_id
        )
        return self.discord.slash_interaction(
            guild_id=self.guild_id,
            channel_id=self.channel_id,
            user_id=USER_ID,
            command_name="video",
            subcommand="sora",
            options={"prompt": prompt, **options},
            attachments={"image": attachment},
        )

    def results(self) -> list[dict[str, Any]]:
        """The bot's own channel posts that carry a finished video."""
        return [m for m in self.discord.bot_messages(self.channel_id) if _mentions_video(m)]


def _mentions_video(message: dict[str, Any]) -> bool:
    text = json.dumps({k: message.get(k) for k in ("content", "embeds", "attachments")})
    return ".mp4" in text


@pytest.fixture(name="world")
async def world_fixture(tmp_path: Path) -> AsyncIterator[World]:
    api = FakeApimart(api_key=API_KEY, time_scale=60.0)  # a 4-minute job takes 4 s
    runner = web.AppRunner(api.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    discord = FakeDiscord(token=TOKEN)
    guild = discord.add_guild("Reel Club")
    discord.add_text_channel(int(guild["id"]), "videos")
    discord.add_member(int(guild["id"]), USER_ID, username="fox_fan")
    await discord.start()
    try:
        yield World(discord, api, api_url, tmp_path)
    finally:
        await discord.close()
        await runner.cleanup()


async def _wait(predicate: Any, timeout: float, what: str, world: World) -> Any:
    try:
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                await asyncio.sleep(0.05)
            return result
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}\n{world.all_logs()[-4000:]}") from None


@contextlib.asynccontextmanager
async def running_bot(world: World) -> AsyncIterator[asyncio.subprocess.Process]:
    ready = world.discord.ready_count
    proc = await world.reelbot("run")
    try:
        await world.discord.wait_connected(timeout=20, ready_count=ready + 1)
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_sync_then_a_sora_job_with_an_image_end_to_end(world: World) -> None:
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    names = {c["name"] for c in world.discord.registered_commands}
    assert "video" in names

    async with running_bot(world) as proc:
        interaction = world.slash_sora("a red fox in snow @everyone", duration=4)
        await world.discord.dispatch("INTERACTION_CREATE", interaction)

        callback = await world.discord.wait_for(
            lambda r: r.path.endswith("/callback") and r.method == "POST", timeout=10
        )
        assert callback.json and callback.json["type"] == 5  # deferred within the window

        await _wait(lambda: world.api.uploads, 15, "the image upload", world)
        await _wait(lambda: world.api.submits, 15, "the submit", world)
        submitted = world.api.submits[0]
        assert submitted["model"] == "sora-2"
        assert submitted["duration"] == 4
        assert submitted["prompt"] == "a red fox in snow @everyone"
        assert len(submitted["image_urls"]) == 1 and "/uploads/" in submitted["image_urls"][0]
        assert "aspect_ratio" not in submitted

        results = await _wait(world.results, 30, "the result message", world)
        text = json.dumps(results[0])
        task = next(iter(world.api.tasks.values()))
        assert f"{task.cost:g}" in text  # the cost the API reported
        mentions = results[0].get("mentions") or []
        assert [str(m["id"]) for m in mentions] == [str(USER_ID)]
        assert not results[0].get("mention_everyone")
        assert proc.returncode is None

    logs = world.all_logs()
    assert API_KEY not in logs and TOKEN not in logs
    # Interaction tokens too: discord.py logs webhook URLs and gateway events at DEBUG.
    assert interaction["token"] not in logs


async def test_sigkill_mid_job_then_restart_posts_once_and_submits_once(world: World) -> None:
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    world.api.plan_next(FakeTaskPlan(duration_s=600))  # 10 s real: still running at the kill

    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("waterfall, rainbow"))
        await _wait(lambda: world.api.submits, 15, "the submit", world)
        await asyncio.sleep(0.5)  # a poll or two
        first.kill()  # SIGKILL: no goodbye, no cleanup
        await first.wait()
    assert world.results() == []

    async with running_bot(world):
        results = await _wait(world.results, 40, "the result after restart", world)
        await asyncio.sleep(2.0)  # anything duplicated would arrive now
        assert len(world.results()) == 1, results
    assert len(world.api.submit_attempts) == 1
    assert len(world.api.submits) == 1


CHANNEL_MESSAGE = r"^/channels/\d+/messages/\d+$"


async def test_sigterm_while_a_result_is_being_delivered_posts_it_once(world: World) -> None:
    """The poller drains before Discord's connection closes: the delivery under way finishes
    (its last status edit included), so the restart has nothing left to post."""
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    world.api.plan_next(FakeTaskPlan(duration_s=120))  # 2 s real

    async with running_bot(world) as first:
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a lighthouse"))
        # The status message's first edit, right after the submit …
        await world.discord.wait_for(
            lambda r: r.method == "PATCH" and re.search(CHANNEL_MESSAGE, r.path) is not None,
            timeout=15,
        )
        # … and Discord holds the next one (the final "done" edit) for 2 s.
        world.discord.fail_next("PATCH", CHANNEL_MESSAGE, 429, retry_after=2.0)
        await _wait(world.results, 30, "the result message", world)
        first.send_signal(signal.SIGTERM)  # while that last edit waits
        async with asyncio.timeout(15):
            assert await first.wait() == 0
    assert len(world.results()) == 1

    async with running_bot(world):
        log = world.logs[-1]
        await _wait(lambda: "connected as" in log.read_text(), 20, "the restart", world)
        await asyncio.sleep(3.0)  # a second copy would be posted now
        assert len(world.results()) == 1, world.all_logs()[-4000:]


async def test_a_channel_where_the_bot_cannot_post_is_refused_before_any_cost(
    world: World,
) -> None:
    """The fake Discord sends the bot's channel permissions with the interaction, as Discord does."""
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    world.discord.set_bot_channel_permissions(
        world.channel_id, deny=PERMISSIONS["EMBED_LINKS"] | PERMISSIONS["ATTACH_FILES"]
    )
    async with running_bot(world):
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a red fox"))
        callback = await world.discord.wait_for(
            lambda r: r.path.endswith("/callback") and r.method == "POST", timeout=10
        )
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] & 64  # ephemeral
    assert "**Embed Links**" in callback.json["data"]["content"]
    assert "Attach Files" not in callback.json["data"]["content"]  # the link is the fallback
    assert world.api.uploads == {} and world.api.submit_attempts == []


def _callbacks(world: World, interaction: dict[str, Any]) -> list[Any]:
    return [
        r
        for r in world.discord.requests
        if r.method == "POST" and r.path.startswith(f"/interactions/{interaction['id']}/")
    ]


async def _answer(world: World, interaction: dict[str, Any]) -> dict[str, Any]:
    await world.discord.dispatch("INTERACTION_CREATE", interaction)
    (callback,) = await _wait(
        lambda: _callbacks(world, interaction), 15, "the interaction's answer", world
    )
    return dict(callback.json)


async def test_settings_queue_and_spend_survive_a_restart(world: World) -> None:
    """An admin's limit, a queued job (with its uploaded image) and the spend outlive the
    process: after a SIGKILL and a restart the queued job is submitted once, in its turn."""
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    owner = int(world.discord.guilds[world.guild_id]["owner_id"])  # has Manage Server
    second_member = USER_ID + 1
    world.api.plan_next(FakeTaskPlan(duration_s=300))  # 5 s real: it holds the one slot

    def admin(sub: str, **options: Any) -> dict[str, Any]:
        return world.discord.slash_interaction(
            guild_id=world.guild_id,
            channel_id=world.channel_id,
            user_id=owner,
            command_name="videoadmin",
            subcommand=sub,
            options=options,
        )

    async with running_bot(world) as first:
        answer = await _answer(world, admin("limit", name="server_concurrent", value="1"))
        assert answer["data"]["flags"] & 64 and "8 → **1**" in answer["data"]["content"]
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("first", duration=4))
        await _wait(lambda: world.api.submits, 15, "the first submit", world)
        queued = world.slash_sora("second", duration=4)
        queued["member"]["user"]["id"] = str(second_member)
        queued["member"]["user"]["username"] = "second"
        await world.discord.dispatch("INTERACTION_CREATE", queued)
        await _wait(lambda: len(world.api.uploads) == 2, 15, "the queued job's upload", world)
        await asyncio.sleep(0.5)  # its status message, with Cancel
        assert len(world.api.submit_attempts) == 1
        first.kill()
        await first.wait()

    async with running_bot(world):
        results = await _wait(
            lambda: len(world.results()) >= 2 and world.results(), 40, "both results", world
        )
        await asyncio.sleep(1.0)
        assert len(world.results()) == 2, results
        assert [b["prompt"] for b in world.api.submits] == ["first", "second"]
        assert len(world.api.submit_attempts) == 2
        settings = await _answer(world, admin("settings"))
        text = json.dumps(settings["data"]["embeds"])
        assert "`server_concurrent` 1" in text
        usage = await _answer(world, admin("usage", period="today"))
        total = sum(t.cost for t in world.api.tasks.values())
        assert f"**Total ${total:.2f}**" in usage["data"]["embeds"][0]["description"]
