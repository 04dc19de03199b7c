"""`/video` — the slash commands and result buttons. Discord I/O only.

Every choice list is built from the catalog, so the menus offer only what a model accepts;
what the menus cannot rule out (sora-2 at 1080p, two images for Omni, a PDF as an image) is
refused by `bot.core.request` before anything is deferred, so the refusal is ephemeral and the
API sees nothing. So is a channel where the bot could not post the result (its permissions
there come with the interaction), and `/video` exists in servers only. The pipeline itself lives in `bot.core.jobs`; rendering in `bot.discord.render`.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.catalog import CATALOG, FAMILIES, ImageStyle, IntParam, ModelSpec, union
from bot.core.controls.admission import Refused
from bot.core.job import Job, JobState
from bot.core.jobs import INTERRUPTED_MESSAGE, ImageFile, with_pending_uploads
from bot.core.request import (
    Problem,
    RequestInvalid,
    VideoRequest,
    build_request,
    check_image_file,
    frame_images,
)
from bot.discord import render, render_admin
from bot.discord.bot import mark_public_placeholder, report_error

if TYPE_CHECKING:
    from bot.discord.bot import ReelBot

log = logging.getLogger(__name__)

Choice = app_commands.Choice
OMNI = FAMILIES["omni"][0]
VEO_MODELS = FAMILIES["veo"]
SORA_MODELS = FAMILIES["sora"]
#: Discord rejects option values over 2^53; Veo's seed range fits.


def _seed_param() -> IntParam:
    param = CATALOG[VEO_MODELS[0]].int_param("seed")
    if param is None:
        raise RuntimeError("the catalog lost Veo's seed range")
    return param


SEED = _seed_param()
VIDEO_TYPES = ("video/",)
UNREADABLE = "Discord would not hand over the attached file, so nothing was sent or charged."

#: APIMart deletes uploaded images after 72 h: a re-roll must come well before that.
UPLOAD_MAX_AGE = 70 * 3600.0
#: Discord's signed attachment URLs (a reference video is sent by its URL) live about a day.
ATTACHMENT_MAX_AGE = 20 * 3600.0
#: After a Re-roll click, the same member's further clicks on the same job are refused this long.
REROLL_GUARD = 15.0
UNKNOWN_JOB = "That job is no longer known."
ALREADY_REROLLING = "Already re-rolling this one; the new video is on its way."
UNKNOWN_NO_REROLL = (
    "This request was never confirmed by APIMart and may still be billed, so it is not "
    "re-rolled: that could charge twice. Check `/video jobs` later, or start a new one."
)
#: In a thread the bot needs Send Messages in Threads instead of Send Messages.
THREAD_TYPES = frozenset(
    {
        discord.ChannelType.public_thread,
        discord.ChannelType.private_thread,
        discord.ChannelType.news_thread,
    }
)


# Typed `Choice[Any]`: one `@choices` decorator mixes int and str lists.
def _str_choices(values: tuple[Any, ...]) -> list[Choice[Any]]:
    return [Choice(name=str(v), value=str(v)) for v in values]


def _int_choices(values: tuple[Any, ...]) -> list[Choice[Any]]:
    return [Choice(name=str(v), value=int(v)) for v in values]


def _param_choices(model_id: str, name: str) -> list[Choice[Any]]:
    param = CATALOG[model_id].choice_param(name)
    assert param is not None, name
    return _str_choices(param.choices)


def _tier(model_id: str) -> str:
    """`veo3.1-fast-official` → `fast`: the last word of the catalog's label."""
    return CATALOG[model_id].label.split()[-1].lower()


VEO_TIERS = {_tier(m): m for m in VEO_MODELS}


def _value(choice: Choice[Any] | None) -> Any:
    return None if choice is None else choice.value


class VideoCog(commands.Cog, name="Video"):
    """The `/video` group: generate, list models, list jobs; and the result buttons' logic."""

    # Servers only: in a DM, anyone sharing a server with the bot could spend that server's
    # APIMart balance privately (and a DM has no channel for the result's buttons).
    video = app_commands.Group(
        name="video",
        description="Make short AI videos with APIMart",
        guild_only=True,
        allowed_contexts=app_commands.AppCommandContext(
            guild=True, dm_channel=False, private_channel=False
        ),
    )

    def __init__(self, bot: ReelBot) -> None:
        self.bot = bot
        #: Re-rolls under way and when each started, by (source job id, member id): in memory,
        #: against double clicks (a restart forgets them, which is harmless).
        self._rerolling: set[tuple[int, int]] = set()
        self._rerolled: dict[tuple[int, int], float] = {}

    # -- generate ---------------------------------------------------------------------------

    @video.command(name="omni", description="Omni Flash: text, 1 or 3 images, or a motion video")
    @app_commands.describe(
        prompt="Scene, subject, action, camera, style and sound",
        duration="Length in seconds (default 6; not with a reference video)",
        resolution="Output resolution (default 720p)",
        aspect_ratio="Frame shape (default 16:9)",
        mode="frame: the image is the first frame; reference: 1 or 3 images guide the look",
        image="An image (jpeg/png/webp/gif)",
        image2="Second reference image (Omni takes 1 or 3)",
        image3="Third reference image (Omni takes 1 or 3)",
        reference_video="A video whose motion to follow",
    )
    @app_commands.choices(
        duration=_int_choices(union("durations", (OMNI,))),
        resolution=_str_choices(union("resolutions", (OMNI,))),
        aspect_ratio=_str_choices(union("aspect_ratios", (OMNI,))),
        mode=_str_choices(union("modes", (OMNI,))),
    )
    async def omni(
        self,
        interaction: discord.Interaction,
        prompt: str,
        duration: Choice[int] | None = None,
        resolution: Choice[str] | None = None,
        aspect_ratio: Choice[str] | None = None,
        mode: Choice[str] | None = None,
        image: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        reference_video: discord.Attachment | None = None,
    ) -> None:
        attachments = [
            (name, a) for name, a in (("image", image), ("image2", image2), ("image3", image3)) if a
        ]
        await self._generate(
            interaction,
            CATALOG[OMNI],
            attachments,
            video=reference_video,
            prompt=prompt,
            duration=_value(duration),
            resolution=_value(resolution),
            aspect_ratio=_value(aspect_ratio),
            mode=_value(mode),
        )

    @video.command(name="veo", description="Google Veo 3.1: text or first/last frame to video")
    @app_commands.describe(
        prompt="What happens (English works best)",
        quality="fast or quality tier (default fast)",
        duration="Length in seconds (default 8)",
        resolution="Output resolution (default 720p)",
        aspect_ratio="Frame shape (default 16:9)",
        first_frame="Image to start from",
        last_frame="Image to end on (needs a first frame)",
        negative_prompt="What to keep out of the video",
        seed=f"Random seed for repeatable results ({SEED.minimum}..{SEED.maximum})",
        audio="Generate sound too (default off)",
        people="Whether people may appear (default allow_adult)",
        resize="How the first frame is fitted (default pad)",
    )
    @app_commands.choices(
        quality=_str_choices(tuple(VEO_TIERS)),
        duration=_int_choices(union("durations", VEO_MODELS)),
        resolution=_str_choices(union("resolutions", VEO_MODELS)),
        aspect_ratio=_str_choices(union("aspect_ratios", VEO_MODELS)),
        people=_param_choices(VEO_MODELS[0], "person_generation"),
        resize=_param_choices(VEO_MODELS[0], "resize_mode"),
    )
    async def veo(
        self,
        interaction: discord.Interaction,
        prompt: str,
        quality: Choice[str] | None = None,
        duration: Choice[int] | None = None,
        resolution: Choice[str] | None = None,
        aspect_ratio: Choice[str] | None = None,
        first_frame: discord.Attachment | None = None,
        last_frame: discord.Attachment | None = None,
        negative_prompt: str | None = None,
        seed: app_commands.Range[int, SEED.minimum, SEED.maximum] | None = None,
        audio: bool | None = None,
        people: Choice[str] | None = None,
        resize: Choice[str] | None = None,
    ) -> None:
        model = VEO_TIERS.get(_value(quality) or "", VEO_MODELS[0])
        attachments = [
            (name, a) for name, a in (("first_frame", first_frame), ("last_frame", last_frame)) if a
        ]
        await self._generate(
            interaction,
            CATALOG[model],
            attachments,
            prompt=prompt,
            duration=_value(duration),
            resolution=_value(resolution),
            aspect_ratio=_value(aspect_ratio),
            negative_prompt=negative_prompt,
            seed=seed,
            generate_audio=audio,
            person_generation=_value(people),
            resize_mode=_value(resize),
        )

    @video.command(name="sora", description="OpenAI Sora 2: text or one image to video")
    @app_commands.describe(
        prompt="What happens in the video",
        model="sora-2 (720p) or sora-2-pro (up to 1080p); default sora-2",
        duration="Length in seconds (default 4)",
        resolution="Output resolution (default 720p; above that needs sora-2-pro)",
        aspect_ratio="Frame shape (default 16:9; with an image, the image decides)",
        image="A reference image (jpeg/png/webp, up to 10 MB)",
    )
    @app_commands.choices(
        model=_str_choices(SORA_MODELS),
        duration=_int_choices(union("durations", SORA_MODELS)),
        resolution=_str_choices(union("resolutions", SORA_MODELS)),
        aspect_ratio=_str_choices(union("aspect_ratios", SORA_MODELS)),
    )
    async def sora(
        self,
        interaction: discord.Interaction,
        prompt: str,
        model: Choice[str] | None = None,
        duration: Choice[int] | None = None,
        resolution: Choice[str] | None = None,
        aspect_ratio: Choice[str] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        await self._generate(
            interaction,
            CATALOG[_value(model) or SORA_MODELS[0]],
            [("image", image)] if image else [],
            prompt=prompt,
            duration=_value(duration),
            resolution=_value(resolution),
            aspect_ratio=_value(aspect_ratio),
        )

    # -- information ------------------------------------------------------------------------

    @video.command(name="models", description="What each video model accepts")
    async def models(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(**render.models().kwargs(), ephemeral=True)

    @video.command(name="jobs", description="Your recent videos: state, cost and links")
    async def jobs(self, interaction: discord.Interaction) -> None:
        runtime = self.bot.require_runtime()
        recent = await runtime.store.recent(requester=str(interaction.user.id), limit=10)
        rendered = render.job_list(recent, runtime.clock.now())
        await interaction.response.send_message(**rendered.kwargs(), ephemeral=True)

    @video.command(name="usage", description="Your spend, what you have left, and your open jobs")
    async def usage(self, interaction: discord.Interaction) -> None:
        runtime = self.bot.require_runtime()
        assert runtime.controls is not None
        allowance = await runtime.controls.allowance(
            str(interaction.guild_id), str(interaction.user.id), role_ids(interaction)
        )
        rendered = render_admin.allowance(allowance, runtime.clock.now())
        await interaction.response.send_message(**rendered.kwargs(), ephemeral=True)

    # -- the flow shared by commands and Re-roll --------------------------------------------

    async def _generate(
        self,
        interaction: discord.Interaction,
        spec: ModelSpec,
        attachments: list[tuple[str, discord.Attachment]],
        *,
        video: discord.Attachment | None = None,
        **fields: Any,
    ) -> None:
        """Validate (pure, fast) → ephemeral refusal, or defer → job → status → launch."""
        try:
            for name, attachment in attachments:
                check_image_file(spec, attachment.content_type, attachment.size, name)
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
            # Placeholders keep the pipeline's own format; the bytes are read after deferring.
            placeholders = [
                ImageFile(b"", a.filename, a.content_type or "") for _, a in attachments
            ]
            refs, _ = with_pending_uploads(placeholders)
            if spec.image_style is ImageStyle.FRAMES:
                by_name = dict(zip((name for name, _ in attachments), refs, strict=True))
                refs = frame_images(by_name.get("first_frame"), by_name.get("last_frame"))
            request = build_request(
                model=spec.id,
                images=refs,
                video_url=video.url if video is not None else None,
                **fields,
            )
        except RequestInvalid as exc:
            await _refuse(interaction, exc)
            return
        await self.start(interaction, request, [a for _, a in attachments])

    async def start(
        self,
        interaction: discord.Interaction,
        request: VideoRequest,
        attachments: list[discord.Attachment],
        *,
        media_at: float | None = None,
    ) -> Job | None:
        """Acknowledge, persist, show the status message, fetch the images, launch.

        `media_at`: when the request's images and video were handed over (a re-roll passes
        its source's, since it sends the same URLs); defaults to now. None is returned when
        the bot may not post the result here (refused privately, nothing sent).
        """
        runtime = self.bot.require_runtime()
        missing = missing_permissions(interaction)
        if missing:
            await interaction.response.send_message(cannot_post(missing), ephemeral=True)
            return None
        media_at = runtime.clock.now() if media_at is None else media_at
        user = interaction.user
        guild_id = str(interaction.guild_id) if interaction.guild_id else None
        # The community controls decide first, so a refusal is private and nothing is shown.
        try:
            admission = await runtime.jobs.admit(
                request,
                origin={"kind": "discord"},
                requester=str(user.id),
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
            await interaction.response.defer(thinking=True)
            mark_public_placeholder(interaction)
            rendered = render.status(job, runtime.clock.now(), position=admission.position)
            if job.state is JobState.QUEUED:
                status = await interaction.edit_original_response(
                    **rendered.kwargs(), view=queued_view(job)
                )
            else:
                status = await interaction.edit_original_response(**rendered.kwargs())
        except BaseException:
            # Nothing was shown: free the slot and the reservation, then let the ladder speak.
            await runtime.jobs.end(job, JobState.FAILED, "interrupted", INTERRUPTED_MESSAGE)
            raise
        mark_public_placeholder(interaction, False)
        await runtime.store.update(
            job,
            origin={
                "kind": "discord",
                "channel_id": str(status.channel.id),
                "message_id": str(status.id),
                "requester_id": str(user.id),
                "guild_id": guild_id,
                "upload_limit": upload_limit(interaction),
                "media_at": media_at,
            },
        )
        self.bot.notifier_for_jobs().remember(job.id, interaction)
        log.info("job %s: requested by %s in channel %s", job.id, user.id, status.channel.id)
        try:
            files = [
                ImageFile(await a.read(), a.filename, a.content_type or "") for a in attachments
            ]
        except (discord.HTTPException, OSError) as exc:
            log.warning("job %s: could not read an attachment: %s", job.id, exc)
            return await runtime.jobs.end(job, JobState.FAILED, "attachment_unreadable", UNREADABLE)
        return await runtime.jobs.launch(job, files)

    async def reroll(self, interaction: discord.Interaction, job_id: int) -> None:
        """Same parameters again, for the requester only (images already live on APIMart).

        Refused privately, with nothing sent: for a job whose submit was never confirmed (it
        may be billed: re-sending could charge twice), when its images or reference video
        have expired, and for a second click while the first re-roll is under way.
        """
        runtime = self.bot.require_runtime()
        key = (job_id, interaction.user.id)
        now = runtime.clock.now()
        # Claimed before the first await, so two clicks that arrive together cannot both pass.
        self._rerolled = {k: t for k, t in self._rerolled.items() if now - t < REROLL_GUARD}
        if key in self._rerolling or key in self._rerolled:
            await interaction.response.send_message(ALREADY_REROLLING, ephemeral=True)
            return
        self._rerolling.add(key)
        self._rerolled[key] = now
        started = False
        try:
            job = await runtime.store.get(job_id)
            refusal = self._reroll_refusal(job, interaction, now)
            if refusal is not None or job is None:
                await interaction.response.send_message(refusal or UNKNOWN_JOB, ephemeral=True)
                return
            started = (
                await self.start(interaction, job.request, [], media_at=media_time(job)) is not None
            )
        finally:
            self._rerolling.discard(key)
            if not started:
                self._rerolled.pop(key, None)

    @staticmethod
    def _reroll_refusal(
        job: Job | None, interaction: discord.Interaction, now: float
    ) -> str | None:
        if job is None:
            return UNKNOWN_JOB
        if job.requester != str(interaction.user.id):
            return (
                "Only the member who asked for this video can re-roll it. "
                "Use Details to see its parameters and make your own."
            )
        if job.state is JobState.UNKNOWN:
            return UNKNOWN_NO_REROLL
        request = job.request
        if request.pending_uploads:
            return "This job's images were never uploaded, so it cannot be re-rolled."
        again = f"Run `/video {request.spec.family}` again with fresh attachments."
        age = now - media_time(job)
        if request.images and age > UPLOAD_MAX_AGE:
            return (
                f"This job's images were uploaded {render.duration_text(age)} ago and APIMart "
                f"keeps uploads only 72 hours, so a re-roll would fail. {again}"
            )
        if request.video_url and age > ATTACHMENT_MAX_AGE:
            return (
                f"This job's reference video was attached {render.duration_text(age)} ago and "
                f"Discord's attachment links expire after about a day, so a re-roll would "
                f"fail. {again}"
            )
        return None

    async def cancel(self, interaction: discord.Interaction, job_id: int) -> None:
        """Cancel a queued job (requester or Manage Server); a submitted one cannot be."""
        runtime = self.bot.require_runtime()
        assert runtime.controls is not None
        manager = bool(getattr(interaction.permissions, "manage_guild", False))
        done, message = await runtime.controls.cancel(
            job_id, str(interaction.user.id), manager=manager
        )
        if not done:
            await interaction.response.send_message(message, ephemeral=True)
            return
        job = await runtime.store.get(job_id)
        if job is None:
            await interaction.response.send_message(message, ephemeral=True)
            return
        await interaction.response.edit_message(
            **render.status(job, runtime.clock.now()).kwargs(), view=None
        )
        await interaction.followup.send(message, ephemeral=True)

    async def details(self, interaction: discord.Interaction, job_id: int) -> None:
        runtime = self.bot.require_runtime()
        job = await runtime.store.get(job_id)
        if job is None:
            await interaction.response.send_message(UNKNOWN_JOB, ephemeral=True)
            return
        await interaction.response.send_message(**render.details(job).kwargs(), ephemeral=True)


async def _refuse(interaction: discord.Interaction, exc: RequestInvalid) -> None:
    log.info("refused /%s: %s", getattr(interaction.command, "qualified_name", "?"), exc)
    await interaction.response.send_message(render.problems(exc), ephemeral=True)


def role_ids(interaction: discord.Interaction) -> tuple[str, ...]:
    """The member's roles, for role tiers (none for a user object outside a server)."""
    roles = getattr(interaction.user, "roles", None) or ()
    return tuple(str(role.id) for role in roles)


def media_time(job: Job) -> float:
    """When the job's images and reference video were handed over (jobs from before this was
    recorded: their creation)."""
    return float(job.origin.get("media_at") or job.created_at)


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
    return int(limit or 10 * 1024 * 1024)


# -- persistent buttons --------------------------------------------------------------------


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"reelbot:(?P<action>reroll|details):(?P<job_id>[0-9]+)",
):
    """Re-roll (same request again, requester only) or Details (parameters, privately).

    The action and job id live in `custom_id`, so the buttons work after a restart.
    """

    LOOKS: ClassVar[dict[str, dict[str, Any]]] = {
        "reroll": {"label": "Re-roll", "emoji": "🎲", "style": discord.ButtonStyle.primary},
        "details": {"label": "Details", "style": discord.ButtonStyle.secondary},
    }

    def __init__(self, action: str, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(custom_id=f"reelbot:{action}:{job_id}", **self.LOOKS[action])
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
            cog = _cog(interaction)
            if self.action == "reroll":
                await cog.reroll(interaction, self.job_id)
            else:
                await cog.details(interaction, self.job_id)
        except Exception as exc:
            await report_error(
                interaction, exc, where=f"the {self.action} button of job {self.job_id}"
            )


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"reelbot:cancel:(?P<job_id>[0-9]+)",
):
    """Cancel on a queued job's status message (persistent: the job id is in `custom_id`)."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                custom_id=f"reelbot:cancel:{job_id}",
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
            await _cog(interaction).cancel(interaction, self.job_id)
        except Exception as exc:
            await report_error(interaction, exc, where=f"the cancel button of job {self.job_id}")


def queued_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job.id))
    return view


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (JobButton, CancelButton)


def _cog(interaction: discord.Interaction) -> VideoCog:
    """The loaded cog (looked up by name: an extension's module may be re-imported)."""
    client = interaction.client
    cog = client.get_cog("Video") if isinstance(client, commands.Bot) else None
    if cog is None:
        raise RuntimeError("the Video cog is not loaded")
    return cast("VideoCog", cog)


def result_view(job: Job) -> discord.ui.View:
    """The buttons under a result message (Re-roll only where re-rolling can work).

    No Re-roll for an `unknown` job: it may have been billed, and its message says it is not
    sent again to avoid a double charge.
    """
    view = discord.ui.View(timeout=None)
    if job.state is not JobState.UNKNOWN and not job.request.pending_uploads:
        view.add_item(JobButton("reroll", job.id))
    view.add_item(JobButton("details", job.id))
    return view


async def setup(bot: ReelBot) -> None:
    await bot.add_cog(VideoCog(bot))
