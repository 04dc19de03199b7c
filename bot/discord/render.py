"""Jobs and catalog rows rendered as Discord messages: pure functions, no I/O.

Everything a member reads comes from here, so Discord's limits (content ≤ 2000 characters,
embed description ≤ 4096, ≤ 25 fields of ≤ 1024) are enforced in one place and tested
without a bot. Times come in as arguments (`now`), never from the wall clock, so the
rendered text is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.core.catalog import CATALOG, FAMILIES, describe
from bot.core.controls.moderation import plain_reason
from bot.core.controls.money import usd
from bot.core.job import NOTICES, Job, JobState
from bot.core.progress import duration_text, progress_bar
from bot.core.request import RequestInvalid

CONTENT_LIMIT = 2000
DESCRIPTION_LIMIT = 4096
FIELD_LIMIT = 25
FIELD_VALUE_LIMIT = 1024
TITLE_LIMIT = 256
#: Discord refuses a message whose embeds total more than 6000 characters.
EMBED_TOTAL_LIMIT = 6000
#: What Details aims to stay under, leaving room for Discord's own counting of names.
DETAILS_BUDGET = 5500
#: Enough of the prompt to recognise the job by; the full prompt is in Details.
PROMPT_PREVIEW = 300
NOT_CHARGED = "not charged"

COLOUR_RUNNING = discord.Colour.blurple()
COLOUR_DONE = discord.Colour.green()
COLOUR_FAILED = discord.Colour.red()
COLOUR_UNKNOWN = discord.Colour.orange()


@dataclass(slots=True)
class Rendered:
    """What one message says: content and/or embeds (a view is added by the caller)."""

    content: str | None = None
    embeds: list[discord.Embed] = field(default_factory=list)

    def kwargs(self) -> dict[str, Any]:
        return {"content": self.content, "embeds": self.embeds}


# -- small pieces --------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """Cut `text` to `limit` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def timestamp(unix: float, style: str = "R") -> str:
    """A Discord timestamp (`<t:…:R>`): every member sees it in their own time zone."""
    return f"<t:{int(unix)}:{style}>"


def cost_text(job: Job) -> str:
    """Money and credits exactly as the API reported them; `not charged` for a zero cost."""
    if job.cost is None and job.credits_cost is None:
        if job.state is JobState.UNKNOWN:
            return "unknown — it may still be billed"
        return "not reported"
    if not job.charged:
        return NOT_CHARGED
    parts = []
    if job.cost is not None:
        parts.append(f"{job.cost:g}")
    if job.credits_cost is not None:
        parts.append(f"{job.credits_cost:g} credits")
    return " · ".join(parts)


#: A heading or subtext marker at the start of a line (Discord renders `# big`, `-# small`).
_LINE_MARKUP = re.compile(r"^(\s*)(#{1,3} |-# )", re.MULTILINE)


def plain(text: str) -> str:
    """A member's text shown as they typed it: no masked links, headings, bold, or pings.

    The bot's messages quote prompts back; unescaped, `[free nitro](https://…)` becomes a
    link in the bot's name and `# HUGE` a heading. `allowed_mentions` already stops pings;
    escaping `@everyone` also keeps it from looking like one.
    """
    escaped = discord.utils.escape_mentions(discord.utils.escape_markdown(text))
    return _LINE_MARKUP.sub(lambda m: f"{m[1]}\\{m[2]}", escaped)


def prompt_preview(prompt: str, limit: int = PROMPT_PREVIEW) -> str:
    """The prompt on one quoted line (newlines folded) so it cannot break the layout."""
    return plain(clip(" ".join(prompt.split()), limit))


def mention(user_id: str | int | None) -> str:
    return f"<@{user_id}>" if user_id else ""


def _elapsed(job: Job, now: float) -> float:
    """A finished job: the recorded figure (APIMart's own run time when known), which stays
    right after a restart; a running one: submit (or creation) until `now`."""
    if job.state.terminal and job.elapsed is not None:
        return job.elapsed
    start = job.submitted_at or job.created_at
    return max(0.0, now - start)


def _state_label(job: Job) -> str:
    return {
        JobState.QUEUED: "queued",
        JobState.CREATED: "preparing",
        JobState.SUBMITTING: "sending to APIMart",
        JobState.RUNNING: "rendering",
        JobState.COMPLETED: "done",
        JobState.FAILED: "failed",
        JobState.CANCELLED: "cancelled",
        JobState.UNKNOWN: "unconfirmed",
    }[job.state]


def _colour(job: Job) -> discord.Colour:
    if job.state is JobState.COMPLETED:
        return COLOUR_DONE
    if job.state is JobState.UNKNOWN:
        return COLOUR_UNKNOWN
    if job.state.terminal:
        return COLOUR_FAILED
    return COLOUR_RUNNING


def _embed(title: str, description: str, colour: discord.Colour) -> discord.Embed:
    return discord.Embed(
        title=clip(title, TITLE_LIMIT),
        description=clip(description, DESCRIPTION_LIMIT),
        colour=colour,
    )


def _add_field(embed: discord.Embed, name: str, value: str, *, inline: bool = True) -> None:
    if len(embed.fields) < FIELD_LIMIT:
        embed.add_field(
            name=clip(name, 256), value=clip(value or "—", FIELD_VALUE_LIMIT), inline=inline
        )


# -- the messages --------------------------------------------------------------------------


#: The status message's title icon once a job has ended (a film clapper while it runs).
STATUS_ICONS = {
    JobState.COMPLETED: "✅",
    JobState.FAILED: "⚠️",
    JobState.CANCELLED: "⚠️",
    JobState.UNKNOWN: "❔",
}


def status(
    job: Job, now: float, *, position: int | None = None, with_result: bool = False
) -> Rendered:
    """The one status message of a job: model, parameters, progress bar, elapsed, estimate.

    A queued job shows its place in the server's queue (`position`) instead of progress.
    `with_result`: the result message could not be posted (the channel refused the bot), so
    the finished status carries what it would have said: the link and the cost.
    """
    request = job.request
    position = job.queue_position if position is None else position
    summary = f"`{request.summary()}`"
    if job.estimate is not None and not job.state.terminal:
        summary += f" · ≈ {usd(job.estimate)}"
    lines = [f"> {prompt_preview(request.prompt)}", summary]
    if job.state is JobState.QUEUED:
        where = f"position {position}" if position else "waiting"
        lines.append(
            f"⏳ queued ({where}): it starts when a slot frees up. Nothing is charged until then."
        )
    elif job.state is JobState.COMPLETED:
        lines.append(f"`{progress_bar(100)}`")
    elif not job.state.terminal:
        lines.append(f"`{progress_bar(job.progress)}`")
    times = [f"{_state_label(job)} · elapsed {duration_text(_elapsed(job, now))}"]
    if job.state is JobState.QUEUED:
        times = []
    if job.estimated_time and not job.state.terminal:
        times.append(f"APIMart estimates {duration_text(job.estimated_time)}")
    if times:
        lines.append(" · ".join(times))
    if job.notice and not job.state.terminal:
        lines.append(f"⏳ {NOTICES.get(job.notice, job.notice)}")
    for note in request.notes():
        lines.append(f"-# {note}")
    if job.state.terminal and job.error_message:
        lines.append(job.error_message)
    if with_result and job.state.terminal:
        if job.video_urls:
            lines.append(f"Download: {job.video_urls[0]}")
            if job.expires_at:
                lines.append(f"The link expires {timestamp(job.expires_at)}.")
        lines.append(f"Cost: {cost_text(job)}")
        lines.append("-# The result message could not be posted in this channel; this is its copy.")
    icon = STATUS_ICONS.get(job.state, "🎬")
    embed = _embed(f"{icon} Job #{job.id} · {request.spec.label}", "\n".join(lines), _colour(job))
    if job.task_id:
        embed.set_footer(text=f"task {job.task_id}")
    return Rendered(embeds=[embed])


def result(job: Job, now: float, *, attached: bool) -> Rendered:
    """The new message a finished job posts: mention, video or link, cost, parameters."""
    if job.state is not JobState.COMPLETED:
        return failure(job, now)
    request = job.request
    who = mention(job.requester)
    head = f"{who} your video is ready." if who else "The video is ready."
    content = clip(f"{head}\n> {prompt_preview(request.prompt)}", CONTENT_LIMIT)
    lines = []
    if job.video_urls:
        link = job.video_urls[0]
        where = "Attached above; also at" if attached else "Download"
        lines.append(f"{where}: {link}")
        if job.expires_at:
            lines.append(
                f"The link expires {timestamp(job.expires_at)} — save the video before then."
            )
        for extra in job.video_urls[1:]:
            lines.append(extra)
    embed = _embed(f"✅ Job #{job.id} · {request.spec.label}", "\n".join(lines), COLOUR_DONE)
    _add_parameters(embed, job)
    _add_field(embed, "Elapsed", duration_text(_elapsed(job, now)))
    _add_field(embed, "Cost", cost_text(job))
    return Rendered(content=content, embeds=[embed])


def failure(job: Job, now: float) -> Rendered:
    """A job that did not produce a video: the reason in plain words and what it cost."""
    request = job.request
    who = mention(job.requester)
    if job.state is JobState.UNKNOWN:
        head = "your video request was not confirmed by APIMart."
    elif job.state is JobState.CANCELLED:
        head = "your video was cancelled."
    else:
        head = "your video could not be made."
    head = f"{who} {head}" if who else head[0].upper() + head[1:]
    content = clip(f"{head}\n> {prompt_preview(request.prompt)}", CONTENT_LIMIT)
    reason = job.error_message or "APIMart gave no reason."
    if job.state is JobState.FAILED and job.task_id:  # the API's own refusal of the task
        reason = plain_reason(job.error_message) or reason
    embed = _embed(f"⚠️ Job #{job.id} · {request.spec.label}", reason, _colour(job))
    _add_parameters(embed, job)
    _add_field(embed, "Elapsed", duration_text(_elapsed(job, now)))
    _add_field(embed, "Cost", cost_text(job))
    return Rendered(content=content, embeds=[embed])


def _add_parameters(embed: discord.Embed, job: Job) -> None:
    request = job.request
    duration = request.effective_duration
    _add_field(embed, "Model", request.model)
    _add_field(embed, "Duration", f"{duration} s" if duration is not None else "from the video")
    _add_field(embed, "Resolution", request.effective_resolution)


def details(job: Job) -> Rendered:
    """The ephemeral Details view: every parameter sent, the task id, the state."""
    request = job.request
    embed = _embed(f"Job #{job.id} · details", "", _colour(job))
    _add_field(embed, "Task id", f"`{job.task_id}`" if job.task_id else "not submitted")
    _add_field(embed, "State", job.state.value)
    sent = request.model_dump(exclude_none=True, exclude={"prompt", "images", "video_url"})
    for name, value in sent.items():
        _add_field(embed, name, plain(str(value)))
    if request.images:
        _add_field(embed, "images", "\n".join(request.images), inline=False)
    if request.video_url:
        _add_field(embed, "reference video", request.video_url, inline=False)
    _add_field(embed, "Cost", cost_text(job))
    if job.error_message:
        _add_field(embed, "Reason", job.error_message, inline=False)
    # The prompt gets what the fields leave of the budget (a 6000-character prompt beside a
    # long negative prompt and reason would otherwise brush Discord's 6000-character total).
    head = "**Prompt**\n"
    room = min(3500, DETAILS_BUDGET - len(embed) - len(head))
    embed.description = head + clip(plain(request.prompt), max(200, room))
    return Rendered(embeds=[embed])


def job_list(jobs: Sequence[Job], now: float) -> Rendered:
    """`/video jobs`: the caller's recent jobs, one line each, with state, cost and link."""
    if not jobs:
        return Rendered(content=f"You have no video jobs yet. Start one with {_commands()}.")
    lines = []
    for job in jobs:
        line = f"**#{job.id}** {_state_label(job)} · `{job.request.summary()}` · {cost_text(job)}"
        if job.state is JobState.RUNNING:
            line += f" · {job.progress}%"
        if job.video_urls:
            expired = job.expires_at is not None and job.expires_at <= now
            line += " · link expired" if expired else f" · [video]({job.video_urls[0]})"
        line += f" · {timestamp(job.created_at)}"
        lines.append(line)
    description = ""
    for line in lines:
        if len(description) + len(line) + 1 > DESCRIPTION_LIMIT:
            break
        description += line + "\n"
    return Rendered(embeds=[_embed("Your recent videos", description.rstrip(), COLOUR_RUNNING)])


def _commands() -> str:
    """`/video omni`, `/video veo` or `/video sora` — one command per catalog family."""
    names = [f"`/video {family}`" for family in FAMILIES]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def models() -> Rendered:
    """`/video models`: what each model accepts, straight from the catalog."""
    embed = _embed(
        "Video models",
        f"Pick one with {_commands()}; options you leave out use the model's default.",
        COLOUR_RUNNING,
    )
    for spec in CATALOG.values():
        row = describe(spec)
        value = "\n".join(f"**{k}**: {v}" for k, v in row.items() if k not in {"model", "family"})
        _add_field(embed, f"{spec.label} (`{spec.id}`)", value, inline=False)
    return Rendered(embeds=[embed])


def problems(exc: RequestInvalid) -> str:
    """A refused request as a short message naming each field and the allowed values."""
    items: Iterable[str] = (f"• **{p.field}**: {p.message}" for p in exc.problems)
    return clip("That video can't be made as asked:\n" + "\n".join(items), CONTENT_LIMIT)
