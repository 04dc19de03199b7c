"""`/video` — the slash commands: map options to a request, call the flow, render. Discord I/O only.

Every choice list and every number in a description is built from the catalog, so the menus
offer only what a model accepts; what the menus cannot rule out (a resolution only the pro
model has, two images for Omni, a PDF as an image) is refused by `bot.core.request` before
anything is deferred, so the refusal is ephemeral and the API sees nothing. `/video` exists in
servers only. The shared flow is `bot.discord.flow`, the buttons `bot.discord.views`, the job
rules `bot.core.jobs` and `bot.core.reroll`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.catalog import (
    CATALOG,
    FAMILIES,
    ChoiceParam,
    IntParam,
    ModelSpec,
    counts_text,
    family_name,
    formats_text,
    size_text,
    union,
)
from bot.discord import flow, render

if TYPE_CHECKING:
    from bot.discord.bot import ReelBot

Choice = app_commands.Choice
OMNI = FAMILIES["omni"][0]
VEO_MODELS = FAMILIES["veo"]
SORA_MODELS = FAMILIES["sora"]


def _seed_param() -> IntParam:
    param = CATALOG[VEO_MODELS[0]].int_param("seed")
    if param is None:
        raise RuntimeError("the catalog lost Veo's seed range")
    return param


#: Discord rejects option values over 2^53; Veo's seed range fits.
SEED = _seed_param()


# Typed `Choice[Any]`: one `@choices` decorator mixes int and str lists.
def _str_choices(values: tuple[Any, ...]) -> list[Choice[Any]]:
    return [Choice(name=str(v), value=str(v)) for v in values]


def _int_choices(values: tuple[Any, ...]) -> list[Choice[Any]]:
    return [Choice(name=str(v), value=int(v)) for v in values]


def _choice_param(model_id: str, name: str) -> ChoiceParam:
    param = CATALOG[model_id].choice_param(name)
    assert param is not None, name
    return param


def _tier(model_id: str) -> str:
    """`veo3.1-fast-official` → `fast`: the last word of the catalog's label."""
    return CATALOG[model_id].label.split()[-1].lower()


VEO_TIERS = {_tier(m): m for m in VEO_MODELS}


def _value(choice: Choice[Any] | None) -> Any:
    return None if choice is None else choice.value


# -- option descriptions, from the catalog --------------------------------------------------
# A family's defaults are its first model's: that is the model an omitted choice picks.


def _duration_text(models: tuple[str, ...]) -> str:
    first = CATALOG[models[0]]
    note = "" if first.duration_with_video else "; not with a reference video"
    return f"Length in seconds (default {first.default_duration}{note})"


def _resolution_text(models: tuple[str, ...]) -> str:
    first = CATALOG[models[0]]
    more = [m for m in models[1:] if set(CATALOG[m].resolutions) - set(first.resolutions)]
    note = f"; above that needs {' or '.join(more)}" if more else ""
    return f"Output resolution (default {first.default_resolution}{note})"


def _aspect_text(models: tuple[str, ...]) -> str:
    first = CATALOG[models[0]]
    note = "" if first.aspect_ratio_with_image else "; with an image, the image decides"
    return f"Frame shape (default {first.default_aspect_ratio}{note})"


def _image_text(spec: ModelSpec, what: str) -> str:
    """`what (formats, up to size)`: what an image option takes, from the model's limits."""
    limits = f"{formats_text(spec.image_formats)}, up to {size_text(spec.image_max_bytes)}"
    return f"{what} ({limits})"


def _extra_reference_text(spec: ModelSpec, nth: str) -> str:
    """`Second reference image (Omni takes 1 or 3)`."""
    counts = counts_text(spec.image_counts)
    return f"{nth} reference image ({family_name(spec.family)} takes {counts})"


def _param_text(param: ChoiceParam) -> str:
    """`Whether people may appear (default allow_adult)` from the catalog's help."""
    words = param.help.split(" (")[0]
    return f"{words[:1].upper()}{words[1:]} (default {param.default})"


def _range_text(models: tuple[str, ...]) -> str:
    """`model (resolution) or model (up to resolution)`: each model's highest resolution."""

    def span(spec: ModelSpec) -> str:
        top = spec.resolutions[-1]
        return top if len(spec.resolutions) == 1 else f"up to {top}"

    return " or ".join(f"{m} ({span(CATALOG[m])})" for m in models)


OMNI_SPEC = CATALOG[OMNI]
PEOPLE = _choice_param(VEO_MODELS[0], "person_generation")
RESIZE = _choice_param(VEO_MODELS[0], "resize_mode")
OMNI_TEXT = f"{OMNI_SPEC.label}: text, {counts_text(OMNI_SPEC.image_counts)} images" + (
    ", or a motion video" if OMNI_SPEC.max_reference_videos else ""
)
TIERS_TEXT = f"{' or '.join(VEO_TIERS)} tier (default {next(iter(VEO_TIERS))})"
SORA_MODEL_TEXT = f"{_range_text(SORA_MODELS)}; default {SORA_MODELS[0]}"


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

    # -- generate ---------------------------------------------------------------------------

    @video.command(name="omni", description=OMNI_TEXT)
    @app_commands.describe(
        prompt="Scene, subject, action, camera, style and sound",
        duration=_duration_text((OMNI,)),
        resolution=_resolution_text((OMNI,)),
        aspect_ratio=_aspect_text((OMNI,)),
        mode="; ".join(OMNI_SPEC.mode_text(m) for m in OMNI_SPEC.modes),
        image=_image_text(OMNI_SPEC, "An image"),
        image2=_extra_reference_text(OMNI_SPEC, "Second"),
        image3=_extra_reference_text(OMNI_SPEC, "Third"),
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
        await flow.generate(
            self.bot,
            interaction,
            OMNI_SPEC,
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
        quality=TIERS_TEXT,
        duration=_duration_text(VEO_MODELS),
        resolution=_resolution_text(VEO_MODELS),
        aspect_ratio=_aspect_text(VEO_MODELS),
        first_frame="Image to start from",
        last_frame="Image to end on (needs a first frame)",
        negative_prompt="What to keep out of the video",
        seed=f"Random seed for repeatable results ({SEED.minimum}..{SEED.maximum})",
        audio="Generate sound too (default off)",
        people=_param_text(PEOPLE),
        resize=_param_text(RESIZE),
    )
    @app_commands.choices(
        quality=_str_choices(tuple(VEO_TIERS)),
        duration=_int_choices(union("durations", VEO_MODELS)),
        resolution=_str_choices(union("resolutions", VEO_MODELS)),
        aspect_ratio=_str_choices(union("aspect_ratios", VEO_MODELS)),
        people=_str_choices(PEOPLE.choices),
        resize=_str_choices(RESIZE.choices),
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
        await flow.generate(
            self.bot,
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
        model=SORA_MODEL_TEXT,
        duration=_duration_text(SORA_MODELS),
        resolution=_resolution_text(SORA_MODELS),
        aspect_ratio=_aspect_text(SORA_MODELS),
        image=_image_text(CATALOG[SORA_MODELS[0]], "A reference image"),
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
        await flow.generate(
            self.bot,
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
        await flow.job_list(self.bot, interaction)

    @video.command(name="usage", description="Your spend, what you have left, and your open jobs")
    async def usage(self, interaction: discord.Interaction) -> None:
        await flow.usage(self.bot, interaction)


async def setup(bot: ReelBot) -> None:
    await bot.add_cog(VideoCog(bot))
