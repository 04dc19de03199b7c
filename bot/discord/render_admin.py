"""Community controls rendered for Discord: settings, usage, allowance, balance. Pure.

Admin figures are exact (every micro-dollar the API reported, `$0.123456`); member-facing
ones are rounded to the cent. The usage CSV comes from the same report as the embed, so
its rows sum to the embed's totals.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.core.apimart import Balance
from bot.core.catalog import CATALOG
from bot.core.controls.audit import Change
from bot.core.controls.limits import LIMITS, MEMBER_LIMITS, GuildControls, show_value
from bot.core.controls.money import usd
from bot.core.controls.service import Allowance
from bot.core.controls.usage import Report
from bot.core.job import JobState
from bot.discord.render import (
    COLOUR_DONE,
    COLOUR_FAILED,
    COLOUR_RUNNING,
    Rendered,
    _add_field,
    _embed,
    clip,
    timestamp,
)

TOP = 10
PERIOD_NAMES = {
    "today": "today",
    "7d": "the last 7 days",
    "30d": "the last 30 days",
    "month": "this month",
}


def refusal(message: str) -> str:
    return clip(f"🚫 {message}", 2000)


def settings(guild: GuildControls, changes: Sequence[Change], prices_known: int) -> Rendered:
    """`/videoadmin settings`: every setting of the server in one embed."""
    embed = _embed(
        "Video settings for this server",
        "Limits marked *default* were never changed. Days and months are UTC.",
        COLOUR_RUNNING,
    )
    lines = []
    for name in LIMITS:
        value = guild.server_limit(name)
        mark = "" if name in guild.limits else " *(default)*"
        lines.append(f"`{name}` {show_value(name, value)}{mark}")
    _add_field(embed, "Limits", "\n".join(lines), inline=False)
    models = []
    for model_id in CATALOG:
        rule = guild.model_rule(model_id)
        text = "✅" if rule.enabled else "❌ disabled"
        if rule.max_resolution:
            text += f" · ≤ {rule.max_resolution}"
        if rule.max_duration:
            text += f" · ≤ {rule.max_duration} s"
        models.append(f"`{model_id}` {text}")
    _add_field(embed, "Models", "\n".join(models), inline=False)
    tiers = []
    for role_id, values in guild.roles.items():
        shown = ", ".join(
            f"{n} {show_value(n, v)}" for n, v in values.items() if n in MEMBER_LIMITS
        )
        tiers.append(f"<@&{role_id}>: {shown or '—'}")
    _add_field(embed, "Role tiers", "\n".join(tiers) or "none", inline=False)
    blocked = [
        f"<@{m}>" + (f": {b.get('reason')}" if b.get("reason") else "")
        for m, b in list(guild.blocked.items())[:20]
    ]
    more = len(guild.blocked) - len(blocked)
    if more > 0:
        blocked.append(f"… and {more} more")
    _add_field(embed, "Blocked members", "\n".join(blocked) or "none", inline=False)
    _add_field(embed, "Banned words", f"{len(guild.words)} (list with `/videoadmin words list`)")
    _add_field(
        embed,
        "Alerts channel",
        f"<#{guild.alerts_channel}>" if guild.alerts_channel else "none",
    )
    _add_field(embed, "Known prices", f"{prices_known} model/resolution pairs")
    history = [
        f"{timestamp(c.at)} <@{c.actor_id}> **{c.setting}**: {c.old or '—'} → {c.new or '—'}"
        for c in changes
    ]
    _add_field(embed, "Last changes", "\n".join(history) or "none yet", inline=False)
    return Rendered(embeds=[embed])


def usage(report: Report) -> Rendered:
    """`/videoadmin usage`: totals, spend by member and by model (the CSV has every row)."""
    embed = _embed(
        f"Video usage · {PERIOD_NAMES.get(report.period, report.period)}",
        f"Since {report.since_day} (UTC). **Total {usd(report.total, exact=True)}** "
        f"= spent {usd(report.spent, exact=True)} + reserved for jobs in flight "
        f"{usd(report.reserved, exact=True)} · {report.jobs} jobs · {report.failures} failed",
        COLOUR_RUNNING,
    )
    members = [
        f"{i}. <@{m}> {usd(total, exact=True)} · {jobs} jobs"
        for i, (m, total, jobs) in enumerate(report.by_member()[:TOP], start=1)
    ]
    _add_field(embed, "Top spenders", "\n".join(members) or "nobody yet", inline=False)
    models = [
        f"`{m}` {usd(total, exact=True)} · {jobs} jobs · {failures} failed"
        for m, total, jobs, failures in report.by_model()
    ]
    _add_field(embed, "By model", "\n".join(models) or "—", inline=False)
    embed.set_footer(text="Every member and model is in the attached CSV (USD, exact).")
    return Rendered(embeds=[embed])


def allowance(a: Allowance, now: float) -> Rendered:
    """`/video usage`: what the member spent and has left, and their open jobs."""
    embed = _embed("Your video usage", "Days and months are UTC.", COLOUR_RUNNING)

    def line(used: int, cap: int | None, resets: float) -> str:
        if cap is None:
            return f"{usd(used)} spent · no limit"
        left = Allowance.left(cap, used)
        return f"{usd(used)} of {usd(cap)} · {usd(left)} left · resets {timestamp(resets)}"

    _add_field(embed, "Today", line(a.today, a.daily_spend, a.day_resets), inline=False)
    _add_field(embed, "This month", line(a.month, a.monthly_spend, a.month_resets), inline=False)
    if a.daily_jobs is not None:
        left = max(0, a.daily_jobs - a.jobs_today)
        _add_field(embed, "Videos today", f"{a.jobs_today} of {a.daily_jobs} · {left} left")
    jobs = []
    for job in a.open_jobs:
        where = (
            f"queued, position {a.positions.get(job.id, '?')}"
            if job.state is JobState.QUEUED
            else job.state.value
        )
        estimate = f" · ≈ {usd(job.estimate)}" if job.estimate is not None else ""
        jobs.append(f"**#{job.id}** {where} · `{job.request.summary()}`{estimate}")
    _add_field(embed, "Your open jobs", "\n".join(jobs) or "none", inline=False)
    return Rendered(embeds=[embed])


def balance(b: Balance) -> Rendered:
    if b.unlimited:
        text = "APIMart reports this key's balance as **unlimited**."
    else:
        text = f"Remaining: **{b.remaining:g}**" if b.remaining is not None else "Remaining: —"
        if b.used is not None:
            text += f" · used so far: {b.used:g}"
        text += "\n-# In the account's unit (USD for most accounts)."
    low = b.remaining is not None and not b.unlimited and b.remaining <= 0
    return Rendered(embeds=[_embed("APIMart balance", text, COLOUR_FAILED if low else COLOUR_DONE)])


def words(phrases: Sequence[str]) -> str:
    if not phrases:
        return "No banned words or phrases on this server."
    return clip("Banned words and phrases: " + ", ".join(f"`{p}`" for p in phrases), 2000)
