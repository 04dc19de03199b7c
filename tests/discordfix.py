"""Fixtures for driving the real ReelBot through simcord against the stand-in APIMart.

How simcord and the pipeline coexist: the runtime (HTTP session, store, poller loop) is
opened *before* the simcord environment, exactly as `reelbot run` opens it before the bot.
The poller task therefore belongs to no bot "generation": simcord neither waits for it when
settling nor cancels it, and its sleeps are plain asyncio sleeps. Work started by an
interaction (defer, create, status message, upload, submit over real HTTP to 127.0.0.1) is
bot-owned; it finishes in milliseconds, well inside simcord's settle timeout. Results are
posted later from the poller's task, so tests wait for them with `Reel.wait_for`.

Import the fixtures into a test module with
`from tests.discordfix import env_fixture, simcord_bot_fixture, reel_fixture, runtime_fixture,
bot_fixture`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest
from simcord import Env

from bot.core.config import Settings
from bot.core.fetch import ATTACHMENT_TIMEOUT, FetchTooLarge
from bot.core.runtime import Runtime, open_runtime
from bot.discord.bot import ReelBot
from bot.testing.fake_apimart import FakeApimart
from bot.testing.notifier import RecordingNotifier
from tests.conftest import API_KEY

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def reel_settings(api_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "APIMART_API_KEY": API_KEY,
        "APIMART_BASE_URL": api_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'reel.db'}",
        "POLL_INITIAL_DELAY": 0.02,
        "POLL_INTERVAL": 0.02,
        "POLL_MAX_INTERVAL": 0.05,
        "API_REQUESTS_PER_SECOND": 1000.0,
        "API_TIMEOUT": 5.0,
        # The stand-ins (APIMart's result videos, test servers) listen on 127.0.0.1.
        "ALLOW_LOCAL_FETCH": True,
        "ATTACHMENT_HOSTS": "cdn.simcord.invalid",  # simcord's CDN
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(name="notifier_options")
def notifier_options_fixture() -> dict[str, Any]:
    """Tests see every progress edit; the throttle and the channel budget have their own tests."""
    return {
        "edit_interval": 0.0,
        "channel_edit_interval": 0.0,
        "edits_per_second": 10_000.0,
        "channel_limit": 10_000,
    }


@pytest.fixture(name="runtime")
async def runtime_fixture(api_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with open_runtime(
        reel_settings(api_url, tmp_path), RecordingNotifier(), resume=False, role="bot"
    ) as rt:
        yield rt


async def read_through_simcord(attachment: discord.Attachment, limit: int) -> bytes:
    """simcord's CDN lives inside discord.py's HTTP client (`get_from_cdn`), not on a socket,
    so on simcord attachments are read through discord.py, with the same deadline and cap."""
    if attachment.size > limit:
        raise FetchTooLarge("the attachment is too large")
    async with asyncio.timeout(ATTACHMENT_TIMEOUT):
        data = await attachment.read()
    if len(data) > min(limit, attachment.size or limit):
        raise FetchTooLarge("the attachment is too large")
    return data


@pytest.fixture(name="bot")
def bot_fixture(runtime: Runtime, notifier_options: dict[str, Any]) -> ReelBot:
    bot = ReelBot(runtime=runtime, notifier_options=notifier_options)
    bot.attachment_reader = read_through_simcord
    return bot


@pytest.fixture(name="simcord_bot")
def simcord_bot_fixture(bot: ReelBot) -> ReelBot:
    """The bot simcord's own `simcord_env` fixture runs (its documented pytest API).

    That fixture starts the environment, selects simcord's clock for the test and, after the
    shutdown, raises whatever the bot raised that the test did not acknowledge via `env.errors`.
    """
    return bot


@pytest.fixture(name="env")
def env_fixture(simcord_env: Env) -> Env:
    """The started simcord Env, under the name the tests use."""
    return simcord_env


@dataclass
class Reel:
    env: Env
    bot: ReelBot
    runtime: Runtime
    fake: FakeApimart
    guild: Any
    channel: Any
    alice: Any
    bob: Any

    def messages(self) -> list[discord.Message]:
        return self.channel.history()

    def results(self) -> list[discord.Message]:
        """Result and failure messages (new messages that mention someone), oldest first."""
        return [m for m in self.messages() if m.content.startswith("<@")]

    def raw(self, message: discord.Message) -> Any:
        """simcord's stored message (who was actually pinged)."""
        return self.env.backend.get_message(message.channel.id, message.id)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait (in real time) for the poller's side of the world, then settle the bot."""
        async with asyncio.timeout(timeout):
            # The poller runs outside simcord; there is no event to await, so look again.
            while not (value := predicate()):
                await asyncio.sleep(0.01)
        await self.env.settle()
        return value

    async def wait_results(self, count: int = 1, timeout: float = 5.0) -> list[discord.Message]:
        await self.wait_for(lambda: len(self.results()) >= count, timeout)
        return self.results()


@pytest.fixture(name="reel")
async def reel_fixture(env: Env, bot: ReelBot, runtime: Runtime, fake: FakeApimart) -> Reel:
    guild = env.create_guild("Studio")
    channel = guild.create_text_channel("videos")
    alice = guild.add_member(env.create_user("alice"))
    bob = guild.add_member(env.create_user("bob"))
    await bot.tree.sync()
    await env.settle()
    return Reel(env, bot, runtime, fake, guild, channel, alice, bob)
