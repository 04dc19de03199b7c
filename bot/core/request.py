"""A video request, validated against the catalog before any byte leaves the process.

Every rule of `shared/apimart-video-api.md` is checked here, so a bad request costs nothing and
the member or operator gets one short message naming the field and the allowed values. The
same `VideoRequest` is built by the CLI, by the Discord cogs and by re-rolls from the store,
and `to_payload()` is the only place the submit JSON is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from bot.core.catalog import CATALOG, ImageStyle, ModelSpec, get_model

#: Placeholder for an image that is still a local file / attachment and will be uploaded.
PENDING_PREFIX = "pending-upload:"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request: which field, and what would be right."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class RequestInvalid(ValueError):
    """Raised for a request the API would refuse; nothing has been sent."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def _valid_text(text: str) -> bool:
    """False for text with undecodable bytes (a terminal's lone surrogates) or NULs: the API
    would refuse it after the job was written, or garble it."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _one_of(values: Iterable[object]) -> str:
    items = [str(v) for v in values]
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


class VideoRequest(BaseModel):
    """The parameters of one generation, in the API's vocabulary.

    Optional fields left as None are not sent: the API applies its documented default, and
    the `effective_*` properties say what that default is for display and pricing.
    `images` are in role order (Omni: references; Veo: first frame then last frame; Sora: one).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    prompt: str
    duration: int | None = None
    resolution: str | None = None
    aspect_ratio: str | None = None
    images: tuple[str, ...] = ()
    mode: str | None = None
    video_url: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    sample_count: int | None = None
    generate_audio: bool | None = None
    person_generation: str | None = None
    resize_mode: str | None = None
    enhance_prompt: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        """Canonical spellings (model id, a resolution's case, `landscape`) and the catalog's rules."""
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if v is not None}
        problems = _check(data)
        if problems:
            raise RequestInvalid(problems)
        return data

    @property
    def spec(self) -> ModelSpec:
        return CATALOG[self.model]

    @property
    def effective_duration(self) -> int | None:
        """Seconds of video asked for; None when Omni follows a reference video's length."""
        if self.duration is not None:
            return self.duration
        if self.video_url and not self.spec.duration_with_video:
            return None
        return self.spec.default_duration

    @property
    def effective_resolution(self) -> str:
        return self.resolution or self.spec.default_resolution

    @property
    def effective_aspect_ratio(self) -> str | None:
        """None when the model follows the image's orientation instead."""
        if self.images and not self.spec.aspect_ratio_with_image:
            return None
        return self.aspect_ratio or self.spec.default_aspect_ratio

    @property
    def pending_uploads(self) -> list[int]:
        return [i for i, ref in enumerate(self.images) if ref.startswith(PENDING_PREFIX)]

    def notes(self) -> list[str]:
        """Things the user asked for that the API will ignore (said, not refused)."""
        if self.aspect_ratio and self.images and not self.spec.aspect_ratio_with_image:
            return [
                f"aspect_ratio: {self.model} follows the image's orientation, so "
                f"{self.aspect_ratio} is not sent"
            ]
        return []

    def to_payload(self) -> dict[str, Any]:
        """The submit body, field for field as in APIMart's examples (unset fields omitted)."""
        if self.pending_uploads:
            raise ValueError("images must be uploaded before the request is submitted")
        spec = self.spec
        body: dict[str, Any] = {"model": self.model, "prompt": self.prompt}
        if self.duration is not None:
            body["duration"] = int(self.duration)
        if self.resolution is not None:
            body["resolution"] = self.resolution
        if self.aspect_ratio is not None and (spec.aspect_ratio_with_image or not self.images):
            body["aspect_ratio"] = self.aspect_ratio
        if self.images:
            if spec.image_style is ImageStyle.FRAMES:
                body["first_frame_image"] = self.images[0]
                if len(self.images) > 1:
                    body["last_frame_image"] = self.images[1]
            else:
                body["image_urls"] = list(self.images)
        if self.mode is not None:
            body["generation_type"] = self.mode
        if self.video_url is not None:
            body["video_urls"] = [self.video_url]
        for name in (
            "negative_prompt",
            "seed",
            "sample_count",
            "generate_audio",
            "person_generation",
            "resize_mode",
            "enhance_prompt",
        ):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body

    def summary(self) -> str:
        """`model · duration · resolution · ratio`: the line in status messages and job lists."""
        parts = [self.model]
        duration = self.effective_duration
        parts.append(f"{duration}s" if duration is not None else "video length")
        parts.append(self.effective_resolution)
        if self.effective_aspect_ratio:
            parts.append(self.effective_aspect_ratio)
        if self.images:
            parts.append(f"{len(self.images)} image{'s' if len(self.images) > 1 else ''}")
        return " · ".join(parts)


def build_request(**fields: Any) -> VideoRequest:
    """Build and validate a request; raises `RequestInvalid` (never pydantic's error)."""
    try:
        return VideoRequest(**fields)
    except RequestInvalid:
        raise
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, RequestInvalid):
                problems += cause.problems
                continue
            loc = ".".join(str(p) for p in err["loc"]) or "request"
            problems.append(Problem(loc, err["msg"].lower()))
        raise RequestInvalid(problems) from None


def check_image_file(spec: ModelSpec, content_type: str | None, size: int, field: str) -> None:
    """Refuse an image file the model or the upload endpoint would refuse (type, size)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "image/jpg":
        kind = "image/jpeg"
    if kind not in spec.image_formats:
        allowed = _one_of(f.removeprefix("image/") for f in spec.image_formats)
        shown = kind or "an unknown type"
        raise RequestInvalid(
            [Problem(field, f"{shown} is not an image {spec.id} takes; use {allowed}")]
        )
    if size > spec.image_max_bytes:
        limit = spec.image_max_bytes // (1024 * 1024)
        raise RequestInvalid(
            [Problem(field, f"{size / 1024 / 1024:.1f} MB is over {spec.id}'s {limit} MB limit")]
        )


def _check(data: dict[str, Any]) -> list[Problem]:
    """Every documented rule, in the order a user would fix them."""
    problems: list[Problem] = []
    model_id = data.get("model")
    try:
        spec = get_model(str(model_id))
    except KeyError:
        return [Problem("model", f"{model_id!r} is not a model here; use {_one_of(CATALOG)}")]
    data["model"] = spec.id

    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(Problem("prompt", "must not be empty"))
    elif not _valid_text(prompt):
        problems.append(
            Problem("prompt", "is not valid UTF-8 text (check the terminal's encoding)")
        )

    duration = data.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | str | float):
            problems.append(Problem("duration", f"use {_one_of(spec.durations)} seconds"))
        else:
            try:
                as_int = int(str(duration).strip().removesuffix("s"))
            except ValueError:
                as_int = -1
            if as_int not in spec.durations or (isinstance(duration, float) and duration != as_int):
                problems.append(
                    Problem(
                        "duration",
                        f"{duration} is not allowed for {spec.id}; use {_one_of(spec.durations)} seconds",
                    )
                )
            else:
                data["duration"] = as_int

    resolution = data.get("resolution")
    if resolution is not None:
        canonical = spec.canonical_resolution(str(resolution))
        if canonical is None:
            problems.append(
                Problem(
                    "resolution",
                    f"{resolution} is not available on {spec.id}; use {_one_of(spec.resolutions)}",
                )
            )
        else:
            data["resolution"] = canonical

    aspect = data.get("aspect_ratio")
    if aspect is not None:
        canonical = spec.canonical_aspect_ratio(str(aspect))
        if canonical is None:
            allowed = list(spec.aspect_ratios) + list(spec.aspect_aliases)
            problems.append(
                Problem("aspect_ratio", f"{aspect} is not allowed; use {_one_of(allowed)}")
            )
        else:
            data["aspect_ratio"] = canonical

    images = tuple(str(i) for i in data.get("images") or ())
    data["images"] = images
    count = len(images)
    if count not in spec.image_counts:
        if spec.image_style is ImageStyle.FRAMES:
            message = f"{spec.id} takes at most a first and a last frame (got {count} images)"
        else:
            message = f"{spec.id} takes {_one_of(spec.image_counts)} images, not {count}"
        problems.append(Problem("images", message))
    for index, ref in enumerate(images):
        if not (_is_url(ref) or ref.startswith(PENDING_PREFIX)):
            problems.append(
                Problem("images", f"image {index + 1} must be an http(s) URL or a file")
            )

    mode = data.get("mode")
    if mode is not None:
        if not spec.modes:
            problems.append(Problem("mode", f"{spec.id} has no generation mode; leave it out"))
        elif mode not in spec.modes:
            problems.append(Problem("mode", f"{mode} is not a mode; use {_one_of(spec.modes)}"))
        elif count not in spec.modes[mode]:
            problems.append(
                Problem(
                    "mode",
                    f"{mode} mode needs {_one_of(spec.modes[mode])} image"
                    f"{'s' if max(spec.modes[mode]) > 1 else ''} (got {count})",
                )
            )

    video = data.get("video_url")
    if video is not None:
        if spec.max_reference_videos < 1:
            problems.append(Problem("video", f"{spec.id} takes no reference video"))
        elif not _is_url(str(video)):
            problems.append(Problem("video", "the reference video must be an http(s) URL"))
        elif data.get("duration") is not None and not spec.duration_with_video:
            problems.append(
                Problem(
                    "duration",
                    "leave duration out with a reference video (the video sets the length)",
                )
            )

    if data.get("negative_prompt") is not None and not spec.negative_prompt:
        problems.append(Problem("negative_prompt", f"{spec.id} takes no negative prompt"))
    if data.get("generate_audio") is not None and not spec.generate_audio:
        problems.append(Problem("audio", f"{spec.id} has no audio switch"))

    enhance = data.get("enhance_prompt")
    if enhance is not None:
        if not spec.enhance_prompt:
            problems.append(Problem("enhance_prompt", f"{spec.id} has no enhance_prompt"))
        elif enhance is not True:
            problems.append(
                Problem("enhance_prompt", "may only be true; leave it out to not enhance")
            )

    for name in ("seed", "sample_count"):
        value = data.get(name)
        if value is None:
            continue
        param = spec.int_param(name)
        if param is None:
            problems.append(Problem(name, f"{spec.id} takes no {name}"))
        elif (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not (param.minimum <= value <= param.maximum)
        ):
            problems.append(
                Problem(name, f"{value} is out of range; use {param.minimum}..{param.maximum}")
            )

    for name in ("person_generation", "resize_mode"):
        value = data.get(name)
        if value is None:
            continue
        choice = spec.choice_param(name)
        if choice is None:
            problems.append(Problem(name, f"{spec.id} takes no {name}"))
        elif value not in choice.choices:
            problems.append(Problem(name, f"{value} is not allowed; use {_one_of(choice.choices)}"))
        elif choice.needs_first_frame and not images:
            problems.append(Problem(name, "only applies with a first-frame image"))
    return problems


def frame_images(first: str | None, last: str | None) -> tuple[str, ...]:
    """Veo's first/last frame pair as the ordered `images` tuple; a last frame needs a first."""
    if last is not None and first is None:
        raise RequestInvalid([Problem("last_frame", "a last frame needs a first frame too")])
    return tuple(ref for ref in (first, last) if ref is not None)
