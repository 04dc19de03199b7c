"""The error ladder and private replies, shared by slash commands, the flow and the buttons.

Kept apart from the `Bot` subclass so the flow and the views can use it without importing the
bot (which imports them).
"""

from __future__ import annotations

import logging
import secrets

import discord
from discord import app_commands

from bot.core.apimart import ApimartError, PaymentRequired
from bot.core.jobs import refusal_message
from bot.core.request import RequestInvalid
from bot.discord import render
from bot.discord.claims import gone_reason, is_gone

log = logging.getLogger(__name__)


async def report_error(
    interaction: discord.Interaction, error: BaseException, *, where: str
) -> None:
    """The error ladder shared by the command tree and the persistent buttons.

    User mistakes become a short ephemeral message, API refusals a human sentence, anything
    unexpected is logged with an id that the member is given. Buttons (`DynamicItem`s) are
    not covered by `tree.on_error` (discord.py only logs their errors), so they call this too.
    """
    original = getattr(error, "original", error)
    if is_gone(original):
        # Another replica answered first, or the token expired: nobody can be told anything
        # through this interaction, and it is no fault of ours. One line, no traceback.
        log.info(
            "%s: interaction %s %s; nothing more sent",
            where,
            interaction.id,
            gone_reason(original),
        )
        return
    if isinstance(original, RequestInvalid):
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
    still "thinking" has been answered with Unknown Message (discord-api-docs#2739). When
    it cannot be edited at all, the neutral line goes out as the followup that replaces it,
    so the error text itself never becomes public.
    """
    try:
        if interaction.response.is_done():
            if interaction.extras.pop(PUBLIC_PLACEHOLDER, False):
                try:
                    await interaction.edit_original_response(content=WITHDRAWN, embeds=[])
                except discord.HTTPException as exc:
                    # @original cannot be edited: the next followup would *become* it, in
                    # public. Let that one say only the neutral line; the reason follows
                    # privately in a second followup.
                    log.info("could not complete the public placeholder: %s", exc)
                    await interaction.followup.send(WITHDRAWN)
                else:
                    try:
                        await interaction.delete_original_response()
                    except discord.HTTPException as exc:
                        log.info("could not remove the public placeholder: %s", exc)
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell the user about an error: %s", exc)
