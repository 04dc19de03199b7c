"""The Discord side of making a video, shared by the slash commands and the Re-roll button.

Check that the result can be posted here, acknowledge, have the core write the job, turn the
"thinking…" reply into the job's status message, record where it lives, read the attachments,
launch. Every rule about jobs (origin's shape, who may re-roll, lifetimes, the double-click
guard) is the core's (`bot.core.jobs`, `bot.core.reroll`); this module only does Discord I/O.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import discord

from bot.core.catalog import DEFAULT_UPLOAD_LIMIT, ImageStyle, ModelSpec
from bot.core.controls.admission import Refused
from bot.core.fetch import FetchError, FetchPolicy
from bot.core.job import Job, JobState
from bot.core.jobs import INTERRUPTED_MESSAGE, ImageFile, Origin, with_pending_uploads
from bot.core.poller import WATCH_AFTER_LOOKUP
from bot.core.request import (
    Problem,
    RequestInvalid,
    VideoRequest,
    build_request,
    check_image_file,
    frame_images,
)
from bot.core.reroll import ALREADY_REROLLING, UNKNOWN_JOB, media_time
from bot.discord import render, render_admin, views
from bot.discord.attachments import check_attachment_url
from bot.discord.replies import mark_public_placeholder

if TYPE_CHECKING:
    from bot.core.runtime import Runtime
    from bot.discord.bot import ReelBot

log = logging.getLogger(__name__)

VIDEO_TYPES = ("video/",)
UNREADABLE = "Discord would not hand over the attached file, so nothing was sent or charged."
NOT_CHARGED = " Nothing was sent to APIMart or charged."
#: `/video` is registered for servers only, but a forged or stale DM interaction still arrives.
SERVERS_ONLY = (
    "`/video` works in servers only (a DM has no channel for the result, and the server's "
    "APIMart balance pays for it). Nothing was made or charged."
)
#: In a thread the bot needs Send Messages in Threads instead of Send Messages.
THREAD_TYPES = frozenset(
    {
        discord.ChannelType.public_thread,
        discord.ChannelType.private_thread,
        discord.ChannelType.news_thread,
    }
)


async def generate(
    bot: ReelBot,
    interaction: discord.Interaction,
    spec: ModelSpec,
    attachments: list[tuple[str, discord.Attachment]],
    *,
    video: discord.Attachment | None = None,
    **fields: Any,
) -> None:
    """Validate (pure, fast) → ephemeral refusal, or defer → job → status → launch."""
    if interaction.guild_id is None:
        await interaction.response.send_message(SERVERS_ONLY, ephemeral=True)
        return
    policy = bot.require_runtime().settings.attachment_policy()
    try:
        request = request_with_attachments(spec, attachments, video, policy=policy, **fields)
    except RequestInvalid as exc:
        log.info("refused /%s: %s", getattr(interaction.command, "qualified_name", "?"), exc)
        await interaction.response.send_message(render.problems(exc), ephemeral=True)
        return
    await start(bot, interaction, request, [a for _, a in attachments])


def request_with_attachments(
    spec: ModelSpec,
    attachments: list[tuple[str, discord.Attachment]],
    video: discord.Attachment | None,
    *,
    policy: FetchPolicy,
    **fields: Any,
) -> VideoRequest:
    """The request, with placeholders for the images (their bytes are read after deferring)."""
    for name, attachment in attachments:
        check_attachment_url(attachment, policy, name)
        check_image_file(spec, attachment.content_type, attachment.size, name)
    if video is not None:
        check_attachment_url(video, policy, "reference_video")
    if video is not None and not (video.content_type or "").startswith(VIDEO_TYPES):
        shown = video.content_type or "an unknown type"
        raise RequestInvalid(
            [
                Problem(
                    "reference_video",
                    f"{shown} is not a video; attach an mp4 or another video file",
                )
            ]
        )
    placeholders = [ImageFile(b"", a.filename, a.content_type or "") for _, a in attachments]
    refs, _ = with_pending_uploads(placeholders)
    if spec.image_style is ImageStyle.FRAMES:
        by_name = dict(zip((name for name, _ in attachments), refs, strict=True))
        refs = frame_images(by_name.get("first_frame"), by_name.get("last_frame"))
    return build_request(
        model=spec.id,
        images=refs,
        video_url=video.url if video is not None else None,
        **fields,
    )


async def start(
    bot: ReelBot,
    interaction: discord.Interaction,
    request: VideoRequest,
    attachments: list[discord.Attachment],
    *,
    media_at: float | None = None,
) -> Job | None:
    """Acknowledge, persist, show the status message, fetch the images, launch.

    `media_at`: when the request's images and video were handed over (a re-roll passes its
    source's, since it sends the same URLs); defaults to now. None is returned when the bot
    may not post the result here (refused privately, nothing sent).
    """
    runtime = bot.require_runtime()
    if interaction.guild_id is None:
        await interaction.response.send_message(SERVERS_ONLY, ephemeral=True)
        return None
    missing = missing_permissions(interaction)
    if missing:
        await interaction.response.send_message(cannot_post(missing), ephemeral=True)
        return None
    media_at = runtime.clock.now() if media_at is None else media_at
    member = str(interaction.user.id)
    guild_id = str(interaction.guild_id)
    # Where the job's messages go is written with the job, so a crash before the status
    # message is shown still leaves the restart a channel to tell the requester in.
    origin = Origin(
        kind="discord",
        channel_id=str(interaction.channel_id),
        requester_id=member,
        guild_id=guild_id,
        upload_limit=upload_limit(interaction),
        media_at=media_at,
    )
    # The community controls decide first, so a refusal is private and nothing is shown.
    try:
        admission = await runtime.jobs.admit(
            request,
            origin=origin,
            requester=member,
            guild_id=guild_id,
            role_ids=role_ids(interaction),
        )
    except Refused as refusal:
        await interaction.response.send_message(
            render_admin.refusal(refusal.message), ephemeral=True
        )
        return None
    job = admission.job
    try:
        callback = await interaction.response.defer(thinking=True)
        mark_public_placeholder(interaction)
        # The "thinking…" placeholder is the status message to be: its id is recorded at
        # once, so even a crash before it is edited leaves one message the bot's token can
        # finish after a restart (instead of "thinking…" forever).
        placeholder = getattr(callback, "message_id", None)
        if placeholder:
            origin = dataclasses.replace(origin, message_id=str(placeholder))
            job = await runtime.jobs.place(job, origin)
    except BaseException as exc:
        # Nothing was shown: free the slot and the reservation, then let the ladder speak.
        await _withdraw(runtime, job, exc)
        raise
    status: discord.InteractionMessage | None = None
    try:
        rendered = render.status(job, runtime.clock.now(), position=admission.position)
        shown: dict[str, Any] = rendered.kwargs()
        if job.state is JobState.QUEUED:
            shown["view"] = views.queued_view(job)
        try:
            status = await interaction.edit_original_response(**shown)
        except discord.HTTPException as exc:
            # @original cannot be edited (the token died, Discord lost it): the job goes on;
            # its status and result reach the channel with the bot's own token.
            log.warning("job %s: could not show its status message: %s", job.id, exc)
    except BaseException as exc:
        await _withdraw(runtime, job, exc)
        raise
    if status is not None:
        mark_public_placeholder(interaction, False)
        if str(status.id) != origin.message_id:
            job = await runtime.jobs.place(
                job, dataclasses.replace(origin, message_id=str(status.id))
            )
    bot.notifier_for_jobs().remember(job.id, interaction)
    log.info("job %s: requested by %s in channel %s", job.id, member, interaction.channel_id)
    files = []
    limit = request.spec.image_max_bytes
    for attachment in attachments:
        try:
            data = await bot.attachment_reader(attachment, limit)
        except FetchError as exc:
            log.warning("job %s: could not read an attachment: %s", job.id, exc)
            text = str(exc)
            message = text[:1].upper() + text[1:] + "." + NOT_CHARGED
            return await runtime.jobs.end(job, JobState.FAILED, "attachment_unreadable", message)
        except (discord.HTTPException, OSError) as exc:
            log.warning("job %s: could not read an attachment: %s", job.id, exc)
            return await runtime.jobs.end(job, JobState.FAILED, "attachment_unreadable", UNREADABLE)
        files.append(ImageFile(data, attachment.filename, attachment.content_type or ""))
    return await runtime.jobs.launch(job, files)


async def _withdraw(runtime: Runtime, job: Job, exc: BaseException) -> None:
    """End a job whose request failed before its status was shown (nothing was charged).

    An error is told to the member privately by the error ladder, so the job forgets its
    channel first (no public failure message beside it). A cancellation (the bot stopping)
    has no ladder: the channel is kept, so the requester is told there.
    """
    if isinstance(exc, Exception):
        job = await runtime.jobs.place(
            job, Origin(kind="discord", requester_id=job.requester, guild_id=job.guild_id)
        )
    await runtime.jobs.end(job, JobState.FAILED, "interrupted", INTERRUPTED_MESSAGE)


async def reroll(bot: ReelBot, interaction: discord.Interaction, job_id: int) -> None:
    """Same parameters again, if the core allows it (see `bot.core.reroll`); else say why."""
    jobs = bot.require_runtime().jobs
    member = str(interaction.user.id)
    # Claimed before the first await, so two clicks that arrive together cannot both pass.
    claim = jobs.rerolls.claim(job_id, member)
    if claim is None:
        await interaction.response.send_message(ALREADY_REROLLING, ephemeral=True)
        return
    started = False
    try:
        source = await jobs.reroll_source(job_id, member)
        if isinstance(source, str):
            await interaction.response.send_message(source, ephemeral=True)
            return
        if not await jobs.hold_reroll(job_id):  # the same guard, across workers
            await interaction.response.send_message(ALREADY_REROLLING, ephemeral=True)
            return
        job = await start(bot, interaction, source.request, [], media_at=media_time(source))
        started = job is not None
    finally:
        claim.release(started)
        await jobs.release_reroll(job_id, started=started)


async def details(bot: ReelBot, interaction: discord.Interaction, job_id: int) -> None:
    """Every parameter of a job, privately."""
    job = await bot.require_runtime().jobs.get(job_id)
    if job is None:
        await interaction.response.send_message(UNKNOWN_JOB, ephemeral=True)
        return
    await interaction.response.send_message(**render.details(job).kwargs(), ephemeral=True)


async def job_list(bot: ReelBot, interaction: discord.Interaction) -> None:
    """`/video jobs`: the member's recent jobs, privately."""
    runtime = bot.require_runtime()
    recent = await runtime.jobs.recent(requester=str(interaction.user.id), limit=10)
    now = runtime.clock.now()
    for job in recent:
        if not job.state.terminal:  # they are looking: their open jobs' polls go first
            runtime.poller.watch(job.id, now + WATCH_AFTER_LOOKUP)
    rendered = render.job_list(recent, now)
    await interaction.response.send_message(**rendered.kwargs(), ephemeral=True)


async def usage(bot: ReelBot, interaction: discord.Interaction) -> None:
    """`/video usage`: the member's spend, allowance and open jobs, privately."""
    runtime = bot.require_runtime()
    assert runtime.controls is not None
    allowance = await runtime.controls.allowance(
        str(interaction.guild_id), str(interaction.user.id), role_ids(interaction)
    )
    rendered = render_admin.allowance(allowance, runtime.clock.now())
    await interaction.response.send_message(**rendered.kwargs(), ephemeral=True)


async def cancel(bot: ReelBot, interaction: discord.Interaction, job_id: int) -> None:
    """Cancel a queued job (requester or Manage Server); a submitted one cannot be."""
    runtime = bot.require_runtime()
    assert runtime.controls is not None
    manager = bool(getattr(interaction.permissions, "manage_guild", False))
    done, message = await runtime.controls.cancel(
        job_id, str(interaction.user.id), manager=manager, guild_id=str(interaction.guild_id)
    )
    job = await runtime.jobs.get(job_id) if done else None
    if job is None:
        await interaction.response.send_message(message, ephemeral=True)
        return
    await interaction.response.edit_message(
        **render.status(job, runtime.clock.now()).kwargs(), view=None
    )
    await interaction.followup.send(message, ephemeral=True)


def role_ids(interaction: discord.Interaction) -> tuple[str, ...]:
    """The member's roles, for role tiers (none for a user object outside a server)."""
    roles = getattr(interaction.user, "roles", None) or ()
    return tuple(str(role.id) for role in roles)


def missing_permissions(interaction: discord.Interaction) -> list[str]:
    """What the bot lacks here to post a result (named as Discord's settings name them).

    Attach Files is not required: without it the result goes as a link.
    """
    perms = interaction.app_permissions
    in_thread = getattr(interaction.channel, "type", None) in THREAD_TYPES
    needed = [
        ("view_channel", "View Channel"),
        ("send_messages_in_threads", "Send Messages in Threads")
        if in_thread
        else ("send_messages", "Send Messages"),
        ("embed_links", "Embed Links"),
    ]
    return [label for attr, label in needed if not getattr(perms, attr)]


def cannot_post(missing: list[str]) -> str:
    """The refusal members see when the bot could not post the result where they asked."""
    names = ", ".join(f"**{name}**" for name in missing)
    several = len(missing) > 1
    return (
        f"I can't post videos in this channel: I'm missing the {names} "
        f"permission{'s' if several else ''} here. Ask a moderator to grant "
        f"{'them' if several else 'it'}, or use me in another channel. "
        "Nothing was sent or charged."
    )


def upload_limit(interaction: discord.Interaction) -> int:
    """The per-file limit where the result will be posted (boosted servers allow more)."""
    limit = getattr(interaction, "attachment_size_limit", None) or getattr(
        interaction, "filesize_limit", None
    )
    if not limit and interaction.guild is not None:
        limit = interaction.guild.filesize_limit
    return int(limit or DEFAULT_UPLOAD_LIMIT)
