"""The `commands.Bot` subclass: wires the runtime to Discord and owns the error ladder.

As in discord.py's `advanced_startup.py`: the long-lived resources (the runtime: HTTP session,
store, API client, poller) are opened by the launcher and passed in; `setup_hook` loads the
cog, registers the persistent buttons (`bot.discord.views`), binds the Discord notifier and resumes open jobs, so
a result that finished while the bot was down is still posted (once). No privileged intents:
slash commands and buttons need none.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.runtime import Runtime
from bot.discord.notifier import DiscordNotifier
from bot.discord.replies import report_error
from bot.discord.views import DYNAMIC_ITEMS, result_view

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.video",)

#: What the bot needs in a channel: see it, post (also in threads), embed links, attach videos.
PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
)


def invite_url(application_id: int) -> str:
    """The link that adds the bot to a server with exactly the scopes and permissions it uses."""
    return discord.utils.oauth_url(
        application_id, permissions=PERMISSIONS, scopes=("bot", "applications.commands")
    )


class ReelTree(app_commands.CommandTree[Any]):
    """One `on_error` for every command (as Red's `RedTree`): three kinds of failure."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        name = interaction.command.qualified_name if interaction.command else "?"
        await report_error(interaction, error, where=f"/{name}")


# reelbot never joins voice: don't warn every start that voice libraries are missing.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


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
        if runtime is not None:
            self.notifier = DiscordNotifier(
                self, session=runtime.session, clock=runtime.clock, **(notifier_options or {})
            )

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
        self.runtime.set_notifier(self.notifier)
        taken = await self.runtime.resume()
        log.info("setup done; %d job(s) taken on at start", taken)

    async def on_ready(self) -> None:
        log.info(
            "connected as %s (%s) to %d servers",
            self.user,
            getattr(self.user, "id", "?"),
            len(self.guilds),
        )
        if self.application_id is not None:
            log.info("invite link: %s", invite_url(self.application_id))
