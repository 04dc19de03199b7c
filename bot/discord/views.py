"""The persistent buttons under a result message, beside the notifier that posts them.

The action and job id live in `custom_id`, so the buttons work after a restart; `ReelBot`
registers `DYNAMIC_ITEMS` in `setup_hook` and hands `result_view` to the notifier. Every
button is `Claimed` first: of several replicas that receive a click, one handles it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, cast

import discord

from bot.core.job import Job, JobState
from bot.core.reroll import offers_reroll
from bot.discord import flow
from bot.discord.claims import Claimed
from bot.discord.custom_ids import button_id
from bot.discord.replies import report_error

if TYPE_CHECKING:
    from bot.discord.bot import ReelBot


class JobButton(
    Claimed,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"reelbot:(?P<action>reroll|details):(?P<job_id>[0-9]+)",
):
    """Re-roll (same request again, requester only) or Details (parameters, privately)."""

    LOOKS: ClassVar[dict[str, dict[str, Any]]] = {
        "reroll": {"label": "Re-roll", "emoji": "🎲", "style": discord.ButtonStyle.primary},
        "details": {"label": "Details", "style": discord.ButtonStyle.secondary},
    }

    def __init__(self, action: str, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(custom_id=button_id(action, job_id), **self.LOOKS[action])
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(match["action"], int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        # discord.py only logs a DynamicItem's errors ("This interaction failed" for the
        # member), so they go through the command tree's ladder here.
        try:
            bot = cast("ReelBot", interaction.client)
            if self.action == "reroll":
                await flow.reroll(bot, interaction, self.job_id)
            else:
                await flow.details(bot, interaction, self.job_id)
        except Exception as exc:
            await report_error(
                interaction, exc, where=f"the {self.action} button of job {self.job_id}"
            )


class CancelButton(
    Claimed,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"reelbot:cancel:(?P<job_id>[0-9]+)",
):
    """Cancel, on a queued job's status message (the requester or Manage Server)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                custom_id=button_id("cancel", job_id),
                label="Cancel",
                style=discord.ButtonStyle.secondary,
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(int(match["job_id"]))

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        try:
            await flow.cancel(cast("ReelBot", interaction.client), interaction, self.job_id)
        except Exception as exc:
            await report_error(interaction, exc, where=f"the cancel button of job {self.job_id}")


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (JobButton, CancelButton)


def status_view(job: Job) -> discord.ui.View | None:
    """The buttons under a status message: Cancel while the job waits in the queue."""
    return queued_view(job) if job.state is JobState.QUEUED else None


def queued_view(job: Job) -> discord.ui.View:
    """The Cancel button under a queued job's status message (removed once it is sent)."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job.id))
    return view


def result_view(job: Job) -> discord.ui.View:
    """The buttons under a result message (Re-roll only where re-rolling can work).

    No Re-roll for an `unknown` job: it may have been billed, and its message says it is not
    sent again to avoid a double charge.
    """
    view = discord.ui.View(timeout=None)
    if offers_reroll(job):
        view.add_item(JobButton("reroll", job.id))
    view.add_item(JobButton("details", job.id))
    return view
