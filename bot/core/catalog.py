"""What each APIMart video model accepts: the single source of truth.

Validation (`bot.core.request`), the CLI's choices and help, the slash-command choices, `/video models`
and the README's model table are all derived from `CATALOG`. Adding a model is adding one
`ModelSpec` entry below; nothing else in the code names a model's limits.

The values restate `shared/apimart-video-api.md` (itself a translation of APIMart's pages).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ImageStyle(StrEnum):
    """How a model receives images in the submit body."""

    #: `image_urls: [...]` — Omni (1 = first frame / reference, 3 = fusion) and Sora (1).
    URL_LIST = "image_urls"
    #: `first_frame_image` / `last_frame_image` — Veo's frame control.
    FRAMES = "frames"


@dataclass(frozen=True, slots=True)
class ChoiceParam:
    """An optional extra parameter with a fixed set of string values."""

    name: str
    choices: tuple[str, ...]
    default: str
    help: str
    needs_first_frame: bool = False


@dataclass(frozen=True, slots=True)
class IntParam:
    """An optional extra integer parameter with an inclusive range."""

    name: str
    minimum: int
    maximum: int
    help: str
    default: int | None = None


MiB = 1024 * 1024
HOUR = 3600

UPLOAD_FORMATS = ("image/jpeg", "image/png", "image/webp", "image/gif")
UPLOAD_MAX_BYTES = 20 * MiB
#: How long APIMart keeps an uploaded image (its URL then 404s): the one place the figure lives.
UPLOAD_LIFETIME_S = 72 * HOUR
#: How long Discord's signed attachment URLs stay valid (about a day; a reference video is sent
#: to APIMart by that URL, so a re-roll after it would fail).
ATTACHMENT_LIFETIME_S = 24 * HOUR
#: The per-file size a posted result may have when the front end did not learn the real one
#: (Discord's default for bots; boosted servers allow more).
DEFAULT_UPLOAD_LIMIT = 10 * MiB


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything the API documents about one model, as data."""

    id: str
    family: str
    label: str
    summary: str
    durations: tuple[int, ...]
    default_duration: int
    resolutions: tuple[str, ...]
    default_resolution: str
    aspect_ratios: tuple[str, ...]
    default_aspect_ratio: str
    image_style: ImageStyle
    image_counts: tuple[int, ...]
    image_roles: tuple[str, ...]
    #: What the upload endpoint takes, unless the model documents less.
    image_formats: tuple[str, ...] = UPLOAD_FORMATS
    image_max_bytes: int = UPLOAD_MAX_BYTES
    aspect_aliases: dict[str, str] = field(default_factory=dict)
    #: Omni's `generation_type`: which modes exist and how many images each takes.
    modes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max_reference_videos: int = 0
    #: Sora ignores aspect_ratio when an image is given (orientation follows the image).
    aspect_ratio_with_image: bool = True
    #: Omni: `duration` must not be sent together with `video_urls`.
    duration_with_video: bool = True
    #: Veo requires `duration` as a JSON number; kept for the docs' sake (we always send ints).
    negative_prompt: bool = False
    generate_audio: bool = False
    enhance_prompt: bool = False
    int_params: tuple[IntParam, ...] = ()
    choice_params: tuple[ChoiceParam, ...] = ()
    #: What each of `modes` does, in a few words; `{counts}` is its image counts (`mode_text`).
    mode_help: dict[str, str] = field(default_factory=dict)

    @property
    def max_images(self) -> int:
        return max(self.image_counts)

    def canonical_resolution(self, value: str) -> str | None:
        """Return the documented spelling of `value` (case-insensitive), or None if not allowed."""
        for res in self.resolutions:
            if res.lower() == value.strip().lower():
                return res
        return None

    def canonical_aspect_ratio(self, value: str) -> str | None:
        v = value.strip().lower()
        v = self.aspect_aliases.get(v, v)
        return v if v in self.aspect_ratios else None

    def mode_text(self, mode: str) -> str:
        """`reference: 1 or 3 images guide the look` — one mode, explained."""
        return f"{mode}: " + self.mode_help.get(mode, mode).format(
            counts=counts_text(self.modes[mode])
        )

    def choice_param(self, name: str) -> ChoiceParam | None:
        return next((p for p in self.choice_params if p.name == name), None)

    def int_param(self, name: str) -> IntParam | None:
        return next((p for p in self.int_params if p.name == name), None)


SORA_IMAGE_FORMATS = ("image/jpeg", "image/png", "image/webp")

_VEO_EXTRAS = {
    "negative_prompt": True,
    "generate_audio": True,
    "enhance_prompt": True,
    "int_params": (
        IntParam("seed", 0, 4_294_967_295, "random seed for reproducible results"),
        IntParam("sample_count", 1, 4, "videos generated per request (1 recommended)"),
    ),
    "choice_params": (
        ChoiceParam(
            "person_generation",
            ("allow_adult", "disallow"),
            "allow_adult",
            "whether people may appear",
        ),
        ChoiceParam(
            "resize_mode",
            ("pad", "crop"),
            "pad",
            "how the first frame is fitted (image→video only)",
            needs_first_frame=True,
        ),
    ),
}


def _veo(model_id: str, label: str, summary: str) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family="veo",
        label=label,
        summary=summary,
        durations=(4, 6, 8),
        default_duration=8,
        resolutions=("720p", "1080p", "4K"),
        default_resolution="720p",
        aspect_ratios=("16:9", "9:16"),
        default_aspect_ratio="16:9",
        image_style=ImageStyle.FRAMES,
        image_counts=(0, 1, 2),
        image_roles=("first frame", "last frame"),
        **_VEO_EXTRAS,  # type: ignore[arg-type]
    )


def _sora(model_id: str, label: str, summary: str, resolutions: tuple[str, ...]) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family="sora",
        label=label,
        summary=summary,
        durations=(4, 8, 12, 16, 20),
        default_duration=4,
        resolutions=resolutions,
        default_resolution="720p",
        aspect_ratios=("16:9", "9:16"),
        aspect_aliases={"landscape": "16:9", "portrait": "9:16"},
        default_aspect_ratio="16:9",
        image_style=ImageStyle.URL_LIST,
        image_counts=(0, 1),
        image_roles=("reference image",),
        image_formats=SORA_IMAGE_FORMATS,
        image_max_bytes=10 * MiB,
        aspect_ratio_with_image=False,
    )


CATALOG: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="Omni-Flash-Ext",
            family="omni",
            label="Omni Flash",
            summary="text→video, image→video, 3-image fusion, motion from a reference video",
            durations=(4, 6, 8, 10),
            default_duration=6,
            resolutions=("720p", "1080p", "4k"),
            default_resolution="720p",
            aspect_ratios=("16:9", "9:16"),
            default_aspect_ratio="16:9",
            image_style=ImageStyle.URL_LIST,
            image_counts=(0, 1, 3),
            image_roles=("reference 1", "reference 2", "reference 3"),
            modes={"frame": (1,), "reference": (1, 3)},
            mode_help={
                "frame": "the image is the first frame",
                "reference": "{counts} images guide the look",
            },
            max_reference_videos=1,
            duration_with_video=False,
        ),
        _veo("veo3.1-fast-official", "Veo 3.1 Fast", "Google Veo 3.1, fast tier"),
        _veo("veo3.1-quality-official", "Veo 3.1 Quality", "Google Veo 3.1, quality tier"),
        _sora("sora-2", "Sora 2", "OpenAI Sora 2", ("720p",)),
        _sora("sora-2-pro", "Sora 2 Pro", "OpenAI Sora 2 Pro", ("720p", "1024p", "1080p")),
    )
}

#: The model `reelbot generate` uses when none is named (the cheapest).
DEFAULT_MODEL = "sora-2"

#: Slash-command families: `/video <family>` and the model ids it covers, in menu order.
FAMILIES: dict[str, tuple[str, ...]] = {}
for _spec in CATALOG.values():
    FAMILIES.setdefault(_spec.family, ())
    FAMILIES[_spec.family] += (_spec.id,)


def get_model(model_id: str) -> ModelSpec:
    """Look a model up by id (exact, then case-insensitive); KeyError with the choices if unknown."""
    if model_id in CATALOG:
        return CATALOG[model_id]
    for spec in CATALOG.values():
        if spec.id.lower() == model_id.strip().lower():
            return spec
    raise KeyError(model_id)


def family_name(family: str) -> str:
    """`omni` → `Omni`: how help texts name a family."""
    return family.capitalize()


def size_text(n_bytes: int) -> str:
    """`10 MB` — sizes as members read them (binary megabytes, as Discord counts them)."""
    return f"{n_bytes // MiB} MB" if n_bytes % MiB == 0 else f"{n_bytes / MiB:.1f} MB"


def formats_text(formats: tuple[str, ...]) -> str:
    """`jpeg/png/webp` from the MIME types."""
    return "/".join(f.removeprefix("image/") for f in formats)


def counts_text(counts: tuple[int, ...]) -> str:
    """`1 or 3` from image counts (zero, meaning text only, left out)."""
    shown = [str(n) for n in counts if n]
    return " or ".join(shown)


def union(attr: str, models: tuple[str, ...]) -> tuple[str | int, ...]:
    """The ordered union of one attribute over several models (for a family's slash choices)."""
    seen: list[str | int] = []
    for model_id in models:
        for value in getattr(CATALOG[model_id], attr):
            if value not in seen:
                seen.append(value)
    return tuple(seen)


def describe(spec: ModelSpec, flags: Mapping[str, str] | None = None) -> dict[str, str]:
    """One row of the human model table (CLI `models`, `/video models`, README).

    `flags` maps API field names to a front end's own option names (the CLI's `--samples` for
    `sample_count`); when given, each extra shows the API field with that option beside it.
    """

    def named(api_field: str, plain: str) -> str:
        if flags is None:
            return plain
        option = flags.get(api_field)
        return f"{api_field} ({option})" if option else api_field

    images = "/".join(str(n) for n in spec.image_counts)
    roles = ", ".join(spec.image_roles)
    extras = []
    if spec.modes:
        extras.append(named("generation_type", "mode") + " " + "/".join(spec.modes))
    if spec.max_reference_videos:
        video = f"≤{spec.max_reference_videos} reference video (no duration with it)"
        extras.append(video if flags is None else f"{named('video_urls', '')}: {video}")
    if spec.negative_prompt:
        extras.append(named("negative_prompt", "negative prompt"))
    extras += [f"{named(p.name, p.name)} {p.minimum}..{p.maximum}" for p in spec.int_params]
    extras += [f"{named(p.name, p.name)} {'/'.join(p.choices)}" for p in spec.choice_params]
    if spec.generate_audio:
        extras.append(named("generate_audio", "audio"))
    if spec.enhance_prompt:
        extras.append(named("enhance_prompt", "enhance_prompt") + " (true only)")
    if (spec.image_formats, spec.image_max_bytes) != (UPLOAD_FORMATS, UPLOAD_MAX_BYTES):
        extras.append(
            f"image {formats_text(spec.image_formats)} ≤ {size_text(spec.image_max_bytes)}"
        )
    if not spec.aspect_ratio_with_image:
        extras.append("no aspect ratio with an image")
    return {
        "model": spec.id,
        "durations (s)": "/".join(str(d) for d in spec.durations)
        + f" (default {spec.default_duration})",
        "resolutions": "/".join(spec.resolutions) + f" (default {spec.default_resolution})",
        "aspect ratios": "/".join(spec.aspect_ratios),
        "images": f"{images} ({roles})",
        "extras": "; ".join(extras) or "—",
    }


def markdown_table() -> str:
    """The model table as Markdown; the README embeds it and a test keeps them equal."""
    rows = [describe(spec) for spec in CATALOG.values()]
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
    return "\n".join(lines)
