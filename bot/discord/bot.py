"""The `commands.Bot` subclass: wires the runtime to Discord and owns the error ladder.

As in discord.py's `advanced_startup.py`: the long-lived resources (the runtime: HTTP session,
store, API client, poller) are opened by the launcher and passed in; `setup_hook` loads the
cog, registers the persistent buttons, binds the Discord notifier and resumes open jobs, so
a result that finished while the bot was down is still posted (once). No privileged intents:
slash commands and buttons need none.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.apimart import ApimartError, PaymentRequired
from bot.core.jobs import refusal_message
from bot.core.request import RequestInvalid
from bot.core.runtime import Runtime
from bot.discord.notifier import DiscordNotifier

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


async def report_error(
    interaction: discord.Interaction, error: BaseException, *, where: str
) -> None:
    """The error ladder shared by the command tree and the persistent buttons.

    User mistakes become a short ephemeral message, API refusals a human sentence, anything
    unexpected is logged with an id that the member is given. Buttons (`DynamicItem`s) are
    not covered by `tree.on_error` (discord.py only logs their errors), so they call this too.
    """
    original = getattr(error, "original", error)
    if isinstance(original, RequestInvalid):
        from bot.discord import render

        message = render.problems(original)
    elif isinstance(error, app_commands.CheckFailure | app_commands.TransformerError):
        message = str(error) or "That command can't be used like this here."
    elif isinstance(original, ApimartError):
        if isinstance(original, PaymentRequired):
            log.error("%s: APIMart balance is empty: %s", where, original)
        message = refusal_message(original)
    else:
        error_id = secrets.token_hex(4)
        log.error("error %s in %s", error_id, where, exc_info=original)
        message = (
            f"Something went wrong on reelbot's side. Error id: `{error_id}` "
            "(the operator can look it up)."
        )
    await reply_privately(interaction, message)


#: `interaction.extras` key: the interaction was deferred publicly and its original response is
#: still Discord's "thinking…" placeholder (no status message has been put there yet).
PUBLIC_PLACEHOLDER = "reelbot.public_placeholder"
#: What the public placeholder says for the moment between being completed and deleted.
WITHDRAWN = "This request did not go through."


def mark_public_placeholder(interaction: discord.Interaction, placeholder: bool = True) -> None:
    """Record whether the original response is still the public "thinking…" placeholder."""
    if placeholder:
        interaction.extras[PUBLIC_PLACEHOLDER] = True
    else:
        interaction.extras.pop(PUBLIC_PLACEHOLDER, None)


async def reply_privately(interaction: discord.Interaction, message: str) -> None:
    """Answer ephemerally whether or not the interaction was already acknowledged.

    After a public defer, the first followup *replaces* the public "thinking…" message (and
    keeps it public), so an error would be shown to everyone: the placeholder is removed
    first, then the followup is a new message and can be ephemeral. It is completed (a
    neutral one-liner) before it is deleted: a followup after deleting a message that is
    still "thinking" has been answered with Unknown Message (discord-api-docs#2739).
    """
    try:
        if interaction.response.is_done():
            if interaction.extras.pop(PUBLIC_PLACEHOLDER, False):
                try:
                    await interaction.edit_original_response(content=WITHDRAWN, embeds=[])
                    await interaction.delete_original_response()
                except discord.HTTPException as exc:
                    log.info("could not remove the public placeholder: %s", exc)
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell the user about an error: %s", exc)


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
        video = self.extensions["cogs.video"]
        self.add_dynamic_items(*video.DYNAMIC_ITEMS)
        if self.runtime is None or self.notifier is None:
            return
        self.notifier.view_factory = video.result_view
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
