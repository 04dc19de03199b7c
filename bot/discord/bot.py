"""The `commands.Bot` subclass: wires the runtime to Discord and owns the error ladder.

As in discord.py's `advanced_startup.py`: the long-lived resources (the runtime: HTTP session,
store, API client, poller) are opened by the launcher and passed in; `setup_hook` loads the
cog, registers the persistent buttons (`bot.discord.views`), binds the Discord notifier and
resumes open jobs, so a result that finished while the bot was down is still posted (once).
No privileged intents: slash commands and buttons need none.

With `SHARD_COUNT` (and `SHARD_IDS`) set, the launcher builds `ShardedReelBot`, the same bot
on `commands.AutoShardedBot`, running just those shards. Every IDENTIFY, sharded or not, first
passes the core's `IdentifyGate`, which on PostgreSQL keeps Discord's `max_concurrency` across
all workers. The bot reports its gateway state to the runtime's readiness (`/readyz`).
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.config import Settings
from bot.core.runtime import Runtime
from bot.core.send_window import SharedWindow
from bot.discord import claims
from bot.discord.attachments import AttachmentReader, CdnReader
from bot.discord.channel_budget import CHANNEL_LIMIT, CHANNEL_WINDOW
from bot.discord.notifier import DiscordNotifier
from bot.discord.replies import report_error
from bot.discord.views import DYNAMIC_ITEMS, result_view, status_view

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.video", "cogs.admin")

#: What the bot needs in a channel: see it, post (also in threads), embed links, attach videos,
#: and read its recent messages (so a result whose post was interrupted is not posted twice).
PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)


def invite_url(application_id: int) -> str:
    """The link that adds the bot to a server with exactly the scopes and permissions it uses."""
    return discord.utils.oauth_url(
        application_id, permissions=PERMISSIONS, scopes=("bot", "applications.commands")
    )


class ReelTree(app_commands.CommandTree[Any]):
    """One `on_error` for every command (as Red's `RedTree`): three kinds of failure; and one
    claim per interaction, so that of several replicas one answers (`bot.discord.claims`)."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await claims.take(interaction)

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        name = interaction.command.qualified_name if interaction.command else "?"
        await report_error(interaction, error, where=f"/{name}")


class ChannelAlerts:
    """Posts the controls' alerts (caps at 80 %/100 %, an empty balance) to a server's channel."""

    def __init__(self, client: discord.Client) -> None:
        self.client = client

    async def alert(self, channel_id: str, text: str) -> None:
        channel = self.client.get_partial_messageable(int(channel_id))
        await channel.send(text[:2000], allowed_mentions=discord.AllowedMentions.none())


def shared_channel_window(runtime: Runtime) -> SharedWindow | None:
    """One per-channel Discord budget for all workers on PostgreSQL (they share the bot
    token, so Discord's bucket); SQLite serves one process, whose own window is the whole."""
    if runtime.store.engine.dialect.name != "postgresql":
        return None
    return SharedWindow(runtime.store, runtime.clock, limit=CHANNEL_LIMIT, per=CHANNEL_WINDOW)


# reelbot never joins voice: don't warn every start that voice libraries are missing.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


async def _no_reader(attachment: discord.Attachment, limit: int) -> bytes:
    raise RuntimeError("this ReelBot was built without a runtime (command listing only)")


class ReelBot(commands.Bot):
    """reelbot on Discord. `runtime=None` builds the command tree only (`reelbot commands`)."""

    def __init__(
        self,
        *,
        runtime: Runtime | None,
        notifier_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("intents", discord.Intents.default())
        options.setdefault("command_prefix", commands.when_mentioned)
        options.setdefault("tree_cls", ReelTree)
        options.setdefault("help_command", None)
        super().__init__(**options)
        self.runtime = runtime
        self.notifier: DiscordNotifier | None = None
        self._max_concurrency: int | None = None
        #: How the flow reads members' attachments (`bot.discord.attachments`).
        self.attachment_reader: AttachmentReader = _no_reader
        if runtime is not None:
            notifier_kw: dict[str, Any] = {
                "on_rest_error": runtime.metrics.discord_rest_error,
                "fetch_policy": runtime.settings.fetch_policy(),
                "shared_window": shared_channel_window(runtime),
            }
            notifier_kw.update(notifier_options or {})
            self.notifier = DiscordNotifier(
                self, session=runtime.fetch_session, clock=runtime.clock, **notifier_kw
            )
            self.attachment_reader = CdnReader(
                runtime.fetch_session, runtime.settings.attachment_policy()
            )
            runtime.readiness.add("gateway", self.gateway_problem, ttl=0.0)

    def require_runtime(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("this ReelBot was built without a runtime (command listing only)")
        return self.runtime

    async def close(self) -> None:
        """Stop the notifier's background status edits, then disconnect."""
        if self.notifier is not None:
            await self.notifier.close()
        await super().close()

    def notifier_for_jobs(self) -> DiscordNotifier:
        if self.notifier is None:
            raise RuntimeError("this ReelBot was built without a runtime (command listing only)")
        return self.notifier

    async def setup_hook(self) -> None:
        for name in EXTENSIONS:
            await self.load_extension(name)
        self.add_dynamic_items(*DYNAMIC_ITEMS)
        if self.runtime is None or self.notifier is None:
            return
        self.notifier.view_factory = result_view
        self.notifier.status_view = status_view
        self.runtime.set_notifier(self.notifier)
        if self.runtime.controls is not None:
            self.runtime.controls.alert_sink = ChannelAlerts(self)
        taken = await self.runtime.resume()
        log.info("setup done; %d job(s) taken on at start", taken)

    def gateway_problem(self) -> str | None:
        """For `/readyz`: None while connected to the gateway, else what is wrong."""
        if self.is_closed():
            return "the Discord connection is closed"
        if not self.is_ready():
            return "not connected to Discord yet"
        if isinstance(self, discord.AutoShardedClient):
            down = sorted(sid for sid, shard in self.shards.items() if shard.is_closed())
            if down:
                return f"shard(s) {', '.join(map(str, down))} disconnected"
        elif self.ws is None or not self.ws.open:
            return "disconnected from Discord; reconnecting"
        return None

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Keep Discord's IDENTIFY limit across workers (PostgreSQL), else pace as usual."""
        gate = self.runtime.identify_gate if self.runtime is not None else None
        if gate is None or not gate.shared:
            await super().before_identify_hook(shard_id, initial=initial)
            return
        await gate.wait(shard_id or 0, await self.max_concurrency())

    async def max_concurrency(self) -> int:
        """Discord's IDENTIFY buckets for this bot (asked once; 1 if Discord won't say)."""
        if self._max_concurrency is None:
            try:
                _, _, limits = await self.http.get_bot_gateway()
                self._max_concurrency = max(1, int(limits["max_concurrency"]))
            except (discord.HTTPException, discord.GatewayNotFound, KeyError, ValueError) as exc:
                log.warning("could not read max_concurrency from Discord (%s); using 1", exc)
                self._max_concurrency = 1
        return self._max_concurrency

    async def on_ready(self) -> None:
        log.info(
            "connected as %s (%s) to %d servers",
            self.user,
            getattr(self.user, "id", "?"),
            len(self.guilds),
        )
        if self.application_id is not None:
            log.info("invite link: %s", invite_url(self.application_id))


class ShardedReelBot(ReelBot, commands.AutoShardedBot):
    """reelbot running the shards `SHARD_IDS` of `SHARD_COUNT` in this process."""


def make_bot(runtime: Runtime, settings: Settings, **options: Any) -> ReelBot:
    """The bot for these settings: sharded when SHARD_COUNT is set, one session otherwise."""
    if settings.SHARD_COUNT is None:
        return ReelBot(runtime=runtime, **options)
    ids = settings.shard_ids
    log.info("running shard(s) %s of %d", ids, settings.SHARD_COUNT)
    return ShardedReelBot(
        runtime=runtime, shard_count=settings.SHARD_COUNT, shard_ids=ids, **options
    )
