"""`/videoadmin` — a server's community controls. Discord I/O only; the rules are the core's.

The group carries `default_member_permissions` = Manage Server, and `interaction_check`
checks Manage Server again at run time: Discord lets a server's admins make the command
visible to anyone, and a member without the permission must never change a setting.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.apimart import ApimartError
from bot.core.catalog import CATALOG, union
from bot.core.controls.limits import LIMITS, MEMBER_LIMITS, SettingInvalid
from bot.core.controls.service import Controls
from bot.core.controls.usage import PERIODS
from bot.discord import render_admin

if TYPE_CHECKING:
    from bot.discord.bot import ReelBot

log = logging.getLogger(__name__)

Choice = app_commands.Choice
#: Every resolution some model offers, spelled once (the core checks it against the model).
RESOLUTIONS: list[str] = []
for _res in union("resolutions", tuple(CATALOG)):
    if str(_res).lower() not in (r.lower() for r in RESOLUTIONS):
        RESOLUTIONS.append(str(_res))
MANAGE_SERVER = discord.Permissions(manage_guild=True)
NOT_ALLOWED = "You need the **Manage Server** permission to change video settings. Nothing changed."


def _choices(values: Any) -> list[Choice[str]]:
    return [Choice(name=str(v), value=str(v)) for v in values]


def _value(choice: Choice[Any] | None) -> Any:
    return None if choice is None else choice.value


class AdminCog(commands.Cog, name="VideoAdmin"):
    """The `/videoadmin` group: settings, limits, role tiers, blocks, words, usage, alerts."""

    videoadmin = app_commands.Group(
        name="videoadmin",
        description="Video settings for this server: limits, models, usage",
        guild_only=True,
        allowed_contexts=app_commands.AppCommandContext(
            guild=True, dm_channel=False, private_channel=False
        ),
        default_permissions=MANAGE_SERVER,
    )

    def __init__(self, bot: ReelBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        """Manage Server again at run time, whatever the command's visibility says."""
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            log.info(
                "refused /%s for %s: no Manage Server",
                getattr(interaction.command, "qualified_name", "?"),
                interaction.user.id,
            )
            raise app_commands.CheckFailure(NOT_ALLOWED)
        return True

    def _controls(self) -> Controls:
        runtime = self.bot.require_runtime()
        assert runtime.controls is not None
        return runtime.controls

    @staticmethod
    async def _done(interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(
            text[:2000], ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    @staticmethod
    def _ids(interaction: discord.Interaction) -> tuple[str, str]:
        return str(interaction.guild_id), str(interaction.user.id)

    # -- settings ---------------------------------------------------------------------------

    @videoadmin.command(name="settings", description="Every video setting of this server")
    async def settings(self, interaction: discord.Interaction) -> None:
        controls = self._controls()
        guild, changes = await controls.settings(str(interaction.guild_id))
        known = len(await controls.prices())
        rendered = render_admin.settings(guild, changes, known)
        await interaction.response.send_message(
            **rendered.kwargs(), ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    @videoadmin.command(
        name="model", description="Enable or disable a model; cap its resolution and length"
    )
    @app_commands.describe(
        model="The model (catalog id)",
        enabled="Whether members may use it",
        max_resolution="Highest resolution allowed (default: any)",
        max_duration="Longest video allowed, in seconds (default: any)",
    )
    @app_commands.choices(model=_choices(CATALOG), max_resolution=_choices(RESOLUTIONS))
    async def model(
        self,
        interaction: discord.Interaction,
        model: Choice[str],
        enabled: bool,
        max_resolution: Choice[str] | None = None,
        max_duration: app_commands.Range[int, 1, 600] | None = None,
    ) -> None:
        guild_id, actor = self._ids(interaction)
        try:
            old, new = await self._controls().changes.set_model(
                guild_id, actor, model.value, enabled, _value(max_resolution), max_duration
            )
        except SettingInvalid as exc:
            await self._done(interaction, f"Not changed: {exc}")
            return
        await self._done(interaction, f"`{model.value}`: {old} → **{new}**")

    @videoadmin.command(name="limit", description="Set one limit for this server (a number or off)")
    @app_commands.describe(
        name="Which limit", value="A number (USD for spend, e.g. 12.50) or `off`"
    )
    @app_commands.choices(name=_choices(LIMITS))
    async def limit(
        self,
        interaction: discord.Interaction,
        name: Choice[str],
        value: app_commands.Range[str, 1, 32],
    ) -> None:
        guild_id, actor = self._ids(interaction)
        try:
            old, new = await self._controls().changes.set_limit(guild_id, actor, name.value, value)
        except SettingInvalid as exc:
            await self._done(interaction, f"Not changed: {exc}")
            return
        await self._done(interaction, f"`{name.value}`: {old} → **{new}**")

    @videoadmin.command(
        name="role", description="A role tier: a member limit for holders of a role"
    )
    @app_commands.describe(
        role="Members holding this role get this limit (the most generous applies)",
        name="Which member limit",
        value="A number (USD for spend) or `off` (no limit for this role)",
    )
    @app_commands.choices(name=_choices(MEMBER_LIMITS))
    async def role(
        self,
        interaction: discord.Interaction,
        role: discord.Role,
        name: Choice[str],
        value: app_commands.Range[str, 1, 32],
    ) -> None:
        guild_id, actor = self._ids(interaction)
        try:
            old, new = await self._controls().changes.set_role_limit(
                guild_id, actor, str(role.id), role.name, name.value, value
            )
        except SettingInvalid as exc:
            await self._done(interaction, f"Not changed: {exc}")
            return
        await self._done(interaction, f"{role.mention} `{name.value}`: {old} → **{new}**")

    @videoadmin.command(name="block", description="Stop a member from making videos here")
    @app_commands.describe(member="Who", reason="Shown to them when they are refused")
    async def block(
        self,
        interaction: discord.Interaction,
        member: discord.Member,
        reason: app_commands.Range[str, 1, 300] | None = None,
    ) -> None:
        guild_id, actor = self._ids(interaction)
        await self._controls().changes.block(guild_id, actor, str(member.id), reason)
        await self._done(interaction, f"{member.mention} is blocked from making videos here.")

    @videoadmin.command(name="unblock", description="Let a blocked member make videos again")
    @app_commands.describe(member="Who")
    async def unblock(self, interaction: discord.Interaction, member: discord.Member) -> None:
        guild_id, actor = self._ids(interaction)
        was = await self._controls().changes.unblock(guild_id, actor, str(member.id))
        text = "may make videos again" if was else "was not blocked"
        await self._done(interaction, f"{member.mention} {text}.")

    @videoadmin.command(name="words", description="Banned words or phrases in prompts")
    @app_commands.describe(action="add, remove or list", phrase="The word or phrase")
    @app_commands.choices(action=_choices(("add", "remove", "list")))
    async def words(
        self,
        interaction: discord.Interaction,
        action: Choice[str],
        phrase: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        guild_id, actor = self._ids(interaction)
        changes = self._controls().changes
        if action.value == "list":
            guild, _ = await changes.settings(guild_id)
            await self._done(interaction, render_admin.words(guild.words))
            return
        if not phrase:
            await self._done(interaction, f"phrase: give the word or phrase to {action.value}.")
            return
        try:
            if action.value == "add":
                changed = await changes.add_word(guild_id, actor, phrase)
                text = "Added." if changed else "Already banned."
            else:
                changed = await changes.remove_word(guild_id, actor, phrase)
                text = "Removed." if changed else "That word or phrase was not banned."
        except SettingInvalid as exc:
            text = f"Not changed: {exc}"
        await self._done(interaction, text)

    @videoadmin.command(name="usage", description="Spend by member and model, with a CSV of it all")
    @app_commands.describe(period="today, the last 7 or 30 days, or this month (UTC)")
    @app_commands.choices(period=_choices(PERIODS))
    async def usage(
        self, interaction: discord.Interaction, period: Choice[str] | None = None
    ) -> None:
        report = await self._controls().report(str(interaction.guild_id), _value(period) or "today")
        rendered = render_admin.usage(report)
        csv_file = discord.File(
            io.BytesIO(report.csv().encode()), filename=f"video-usage-{report.period}.csv"
        )
        await interaction.response.send_message(
            **rendered.kwargs(),
            file=csv_file,
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @videoadmin.command(
        name="balance", description="APIMart's remaining balance for this bot's key"
    )
    async def balance(self, interaction: discord.Interaction) -> None:
        runtime = self.bot.require_runtime()
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            answer = await runtime.api.balance()
        except ApimartError as exc:
            await interaction.followup.send(
                f"APIMart did not give the balance: {exc.api_message or type(exc).__name__}",
                ephemeral=True,
            )
            return
        await interaction.followup.send(**render_admin.balance(answer).kwargs(), ephemeral=True)

    @videoadmin.command(name="alerts", description="Where spending and balance warnings go")
    @app_commands.describe(channel="A text channel the bot can post in")
    async def alerts(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        guild_id, actor = self._ids(interaction)
        await self._controls().changes.set_alerts(guild_id, actor, str(channel.id))
        await self._done(
            interaction,
            f"Warnings (80 % and 100 % of a server cap, an empty APIMart balance) go to "
            f"{channel.mention}.",
        )


async def setup(bot: ReelBot) -> None:
    await bot.add_cog(AdminCog(bot))
