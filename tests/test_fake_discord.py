"""End-to-end tests of the fake Discord against a real discord.py ``commands.Bot``."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import jsonschema
import pytest
from discord import app_commands
from discord.ext import commands

from bot.testing.fake_discord import (
    PERMISSIONS,
    FakeDiscord,
    discord_py_pointed_at,
)
from tests.openapi import discord_openapi

TOKEN = "test-token-123"

#: A real discord.py client against the whole fake Discord: left out of the fast loop.
pytestmark = pytest.mark.e2e


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    fd = FakeDiscord(token=TOKEN)
    guild = fd.add_guild("Reel Guild")
    fd.add_text_channel(int(guild["id"]), "general")
    fd.add_text_channel(int(guild["id"]), "locked")
    await fd.start()
    with discord_py_pointed_at(fd.rest_base, fd.gateway_url, fd.cdn_base):
        yield fd
    await fd.close()
    assert fd.errors == [], "the fake crashed handling a request"


def _world(fd: FakeDiscord) -> tuple[int, int, int]:
    guild_id = next(iter(fd.guilds))
    general, locked = (int(c["id"]) for c in fd.channels.values())
    return guild_id, general, locked


class Recorder:
    def __init__(self) -> None:
        self.downloaded: bytes | None = None
        self.errors: list[BaseException] = []
        self.done = asyncio.Event()
        self.sent_message: discord.Message | None = None


def make_bot(rec: Recorder) -> commands.Bot:
    bot = commands.Bot(
        command_prefix="!",
        intents=discord.Intents.default(),
        guild_ready_timeout=0.05,
    )
    video = app_commands.Group(name="video", description="Make videos")

    @video.command(name="make", description="Make a video")
    @app_commands.choices(
        seconds=[app_commands.Choice(name="5s", value=5), app_commands.Choice(name="10s", value=10)]
    )
    async def make(
        interaction: discord.Interaction,
        prompt: str,
        seconds: app_commands.Choice[int],
        image: discord.Attachment,
    ) -> None:
        try:
            await interaction.response.defer(thinking=True)
            rec.downloaded = await image.read()
            await interaction.edit_original_response(
                content=f"rendering {prompt!r} ({seconds.value}s) from {image.filename}"
            )
            assert isinstance(interaction.channel, discord.TextChannel)
            rec.sent_message = await interaction.channel.send(
                f"{interaction.user.mention} your video is ready",
                file=discord.File(io.BytesIO(b"\x00\x01fake-mp4" * 100), filename="video.mp4"),
                allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
            )
        except BaseException as exc:  # recorded for the test to inspect
            rec.errors.append(exc)
        finally:
            rec.done.set()

    bot.tree.add_command(video)

    async def setup_hook() -> None:
        await bot.tree.sync()

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


@contextlib.asynccontextmanager
async def running(bot: commands.Bot, token: str = TOKEN) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(bot.start(token))
    try:
        yield task
    finally:
        await bot.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


async def _ready(bot: commands.Bot, task: asyncio.Task[None]) -> None:
    waiter = asyncio.ensure_future(bot.wait_until_ready())
    done, _ = await asyncio.wait({waiter, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # surface login/connect errors
    assert waiter in done, "bot never became ready"


def _schema_validator(name: str) -> Any:
    """A validator for one of Discord's schemas (skips on a clone without the spec)."""
    schema = {**discord_openapi(), "$ref": f"#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema)


async def test_end_to_end_slash_command(fake: FakeDiscord) -> None:
    guild_id, general, _ = _world(fake)
    user = fake.add_member(guild_id, username="alice")
    user_id = int(user["user"]["id"])
    rec = Recorder()
    bot = make_bot(rec)
    async with running(bot) as task:
        await _ready(bot, task)
        await fake.wait_connected()

        # connected: READY + GUILD_CREATE parsed into discord.py's cache
        assert bot.user is not None and bot.user.id == fake.bot_user_id
        assert bot.application_id == fake.application_id
        guild = bot.get_guild(guild_id)
        assert guild is not None and guild.name == "Reel Guild"
        channel = guild.get_channel(general)
        assert isinstance(channel, discord.TextChannel) and channel.name == "general"
        assert guild.me is not None and channel.permissions_for(guild.me).attach_files
        # discord.py asks for transport compression (zlib-stream without zstandard installed)
        assert fake.gateway_queries[0]["v"] == "10"
        assert fake.gateway_queries[0].get("compress") in ("zlib-stream", "zstd-stream")

        # the command sync was recorded and stored
        sync = await fake.wait_for(
            lambda r: (
                r.method == "PUT" and r.path == f"/applications/{fake.application_id}/commands"
            )
        )
        assert sync.status == 200
        assert [c["name"] for c in fake.registered_commands] == ["video"]
        assert fake.unhandled_requests == []

        # a user invokes /video make with an attachment
        att = fake.add_attachment("in.png", b"\x89PNG fake image bytes", "image/png")
        payload = fake.slash_interaction(
            guild_id=guild_id,
            channel_id=general,
            user_id=user_id,
            command_name="video",
            subcommand="make",
            options={"prompt": "a cat surfing", "seconds": 10},
            attachments={"image": att},
        )
        assert payload["data"]["id"] == fake.registered_commands[0]["id"]
        assert payload["data"]["options"][0]["options"][1] == {
            "name": "seconds",
            "type": 4,
            "value": 10,
        }
        await fake.dispatch("INTERACTION_CREATE", payload)
        await asyncio.wait_for(rec.done.wait(), 10)
        assert rec.errors == []
        token = payload["token"]

        # deferred (type 5), with with_response=1 → InteractionCallbackResponse body
        cb = await fake.wait_for(lambda r: r.path.endswith("/callback"))
        assert cb.json == {"type": 5}
        assert cb.query.get("with_response") in ("1", "true")
        assert cb.response["interaction"]["response_message_loading"] is True
        # attachment downloaded from the fake CDN
        assert rec.downloaded == b"\x89PNG fake image bytes"
        assert any(r.kind == "cdn" and r.path.endswith("/in.png") for r in fake.requests)
        # @original edited
        kinds = [e["kind"] for e in fake.interaction_responses[token]]
        assert kinds == ["callback", "edit_original"]
        original = fake.interaction_responses[token][1]["message"]
        assert original["content"] == "rendering 'a cat surfing' (10s) from in.png"
        assert original["flags"] & 128 == 0  # no longer loading
        # channel message with its file and allowed_mentions
        post = await fake.wait_for(
            lambda r: r.method == "POST" and r.path == f"/channels/{general}/messages"
        )
        assert post.json["allowed_mentions"]["users"] == [user_id]
        assert "users" not in post.json["allowed_mentions"]["parse"]
        assert post.files == [("video.mp4", 1000, "application/octet-stream")]
        [sent] = fake.bot_messages(general)
        assert sent["attachments"][0]["filename"] == "video.mp4"
        assert sent["attachments"][0]["size"] == 1000
        assert sent["attachments"][0]["content_type"] == "video/mp4"
        assert [m["id"] for m in sent["mentions"]] == [str(user_id)]
        assert rec.sent_message is not None and rec.sent_message.attachments[0].size == 1000
        assert fake.attachment_bytes(sent["attachments"][0]) == b"\x00\x01fake-mp4" * 100

        # fault injection: 403 on the next channel message surfaces as discord.Forbidden
        fake.fail_next("POST", r"^/channels/\d+/messages$", 403, 50013, "Missing Permissions")
        with pytest.raises(discord.Forbidden) as info:
            await channel.send("hello")
        assert info.value.code == 50013
        # a real permission deny does the same (and updates the bot's cache via CHANNEL_UPDATE)
        _, _, locked = _world(fake)
        fake.set_bot_channel_permissions(locked, deny=PERMISSIONS["ATTACH_FILES"])
        locked_ch = guild.get_channel(locked)
        assert isinstance(locked_ch, discord.TextChannel)
        await locked_ch.send("text is fine")
        with pytest.raises(discord.Forbidden):
            await locked_ch.send(file=discord.File(io.BytesIO(b"x"), filename="x.bin"))
        # 429 with retry_after: discord.py waits and retries transparently
        fake.fail_next("POST", r"^/channels/\d+/messages$", 429, retry_after=0.05)
        msg = await channel.send("after rate limit")
        assert msg.content == "after rate limit"
        # unknown channel
        with pytest.raises(discord.NotFound):
            await bot.http.send_message(123, params=discord.http.handle_message_parameters("x"))

    # the bot closed; a second bot connects to the same fake and gets READY again
    await fake.wait_disconnected()
    bot2 = make_bot(Recorder())
    async with running(bot2) as task2:
        await _ready(bot2, task2)
        await fake.wait_connected(ready_count=2)
        assert bot2.get_guild(guild_id) is not None

    # Last, as it needs Discord's spec (a clone without it skips only this part's verdict):
    # the bodies are what Discord's OpenAPI schema describes.
    _schema_validator("CreateMessageInteractionCallbackRequest").validate(cb.json)
    _schema_validator("InteractionCallbackResponse").validate(cb.response)
    _schema_validator("MessageResponse").validate(post.response)


async def test_component_interaction_and_upload_limit(fake: FakeDiscord) -> None:
    guild_id, general, _ = _world(fake)
    clicked = asyncio.Event()

    class Buttons(discord.ui.View):
        @discord.ui.button(label="Again", custom_id="again")
        async def again(
            self, interaction: discord.Interaction, button: discord.ui.Button[Any]
        ) -> None:
            await interaction.response.send_message("again!", ephemeral=True)
            clicked.set()

    bot = commands.Bot(
        command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05
    )
    async with running(bot) as task:
        await _ready(bot, task)
        channel = bot.get_channel(general)
        assert isinstance(channel, discord.TextChannel)
        view = Buttons(timeout=None)
        msg = await channel.send("pick", view=view)
        stored = fake.bot_messages(general)[-1]
        assert stored["components"][0]["components"][0]["custom_id"] == "again"
        await fake.dispatch(
            "INTERACTION_CREATE",
            fake.component_interaction(
                message_id=msg.id,
                custom_id="again",
                guild_id=guild_id,
                channel_id=general,
                user_id=4242,
            ),
        )
        await asyncio.wait_for(clicked.wait(), 5)
        cb = await fake.wait_for(lambda r: r.path.endswith("/callback"))
        assert cb.json["type"] == 4 and cb.json["data"]["flags"] == 64
        # ephemeral replies are not channel messages
        assert all(m["content"] != "again!" for m in fake.messages[general])

        # 10 MiB limit at premium tier 0 → 413 / 40005
        big = discord.File(io.BytesIO(b"\0" * (10 * 1024 * 1024 + 1)), filename="big.mp4")
        with pytest.raises(discord.HTTPException) as info:
            await channel.send(file=big)
        assert info.value.status == 413 and info.value.code == 40005


async def test_gateway_resume_wrong_token_and_unknown_route(fake: FakeDiscord) -> None:
    bot = commands.Bot(
        command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05
    )
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    async with running(bot) as task:
        await _ready(bot, task)
        session = await fake.wait_connected()
        await fake.disconnect_all(code=4000)
        await asyncio.wait_for(resumed.wait(), 10)
        assert any(
            p.get("op") == 6 and p["d"]["session_id"] == session for p in fake.gateway_received
        )
        assert fake.connected_sessions == [session]
        # unknown routes are loud
        with pytest.raises(discord.NotFound):
            await bot.http.request(discord.http.Route("GET", "/voice/regions"))
        assert [r.path for r in fake.unhandled_requests] == ["/voice/regions"]

    # wrong token: REST login fails with 401 → LoginFailure
    bad = commands.Bot(command_prefix="!", intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await bad.login("wrong-token")
    await bad.close()

    # gateway checks the token too (close 4004) — raw client
    async with aiohttp.ClientSession() as session_http:
        async with session_http.ws_connect(fake.gateway_url + "?v=10&encoding=json") as ws:
            hello = await ws.receive_json()
            assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 41250
            await ws.send_json({"op": 2, "d": {"token": "nope", "intents": 0, "properties": {}}})
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4004
        # JSON answers carry exactly application/json
        async with session_http.get(fake.rest_base + "/gateway") as resp:
            assert resp.headers["Content-Type"] == "application/json"
            assert (await resp.json())["url"].startswith("ws://127.0.0.1:")
