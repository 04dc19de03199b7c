"""The terminal front end: `reelbot generate`, `jobs`, `status`, `models`, `check`, `fake-api`.

Exit codes are part of the interface: 0 completed, 1 the task failed, 2 invalid input or
settings (nothing was sent), 3 the API refused or could not be reached, 4 the task is still
running (`status`), 130 interrupted (Ctrl-C / SIGTERM; the task id is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.core.catalog import (
    CATALOG,
    DEFAULT_MODEL,
    FAMILIES,
    ChoiceParam,
    ImageStyle,
    ModelSpec,
    counts_text,
    describe,
    family_name,
    union,
)
from bot.core.config import Settings, load_settings
from bot.core.images import read_local_image, sniff_image_type
from bot.core.logs import setup_logging_from
from bot.core.request import RequestInvalid, build_request
from bot.terminal import db
from bot.terminal.interrupted import report_interrupted_before_start

EXIT_OK, EXIT_TASK_FAILED, EXIT_INVALID, EXIT_API = 0, 1, 2, 3
EXIT_RUNNING, EXIT_INTERRUPTED = 4, 130

log = logging.getLogger("bot")


GENERATE_EPILOG = """\
key: real runs need APIMART_API_KEY (environment or .env; `reelbot check` tests it);
     --fake needs no key and costs nothing (a stand-in API; the link it prints is not a video).
exit codes:
  0  completed
  1  the task failed at APIMart
  2  invalid input or settings (nothing was sent)
  3  APIMart refused or could not be reached (also a submit whose answer was lost: the job is
     then "unknown" and is never sent again)
  4  still running when it stopped being followed (`reelbot status TASK_ID` later)
  130  interrupted (Ctrl-C): the task id is printed; the job may still be made and billed
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks (exit codes read as a list)."""


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none (the help says what then)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _who(has: Callable[[ModelSpec], object]) -> str:
    """`Veo` — the families (as help names them) with a model for which `has` is true."""
    return "/".join(family_name(f) for f in FAMILIES if any(has(CATALOG[m]) for m in FAMILIES[f]))


def _everywhere(attr: str) -> tuple[Any, ...]:
    """One attribute's values over every model, in catalog order, each spelling once."""
    seen: dict[str, Any] = {}
    for value in union(attr, tuple(CATALOG)):
        seen.setdefault(str(value).lower(), value)
    return tuple(seen.values())


def _choice_values(name: str) -> list[str]:
    return list(_choice_param(name).choices)


def _choice_param(name: str) -> ChoiceParam:
    """The first catalog entry of choice parameter `name` (its models share the choices)."""
    for spec in CATALOG.values():
        param = spec.choice_param(name)
        if param is not None:
            return param
    raise KeyError(name)


def _int_range(name: str) -> str:
    """`0..4294967295` — the catalog's range of an integer parameter."""
    for spec in CATALOG.values():
        param = spec.int_param(name)
        if param is not None:
            return f"{param.minimum}..{param.maximum}"
    raise KeyError(name)


def _images_help() -> str:
    """How many images each family takes, and in which roles (Veo: frames, in order)."""
    parts = []
    for family, models in FAMILIES.items():
        spec = CATALOG[models[0]]
        if spec.image_style is ImageStyle.FRAMES:
            what = ", then ".join(spec.image_roles)
        else:
            what = counts_text(tuple(int(n) for n in union("image_counts", models)))
        parts.append(f"{family_name(family)}: {what}")
    return f"reference image, repeatable, in order ({'; '.join(parts)}). Local files are uploaded."


def add_commands(sub: Any) -> None:
    """The terminal's verbs, added to the `reelbot` parser by `bot.app`."""
    gen = sub.add_parser(
        "generate",
        help="make one video from the terminal",
        # Wrapped here: the raw formatter (kept for the epilog's list) does not wrap it.
        description=textwrap.fill(
            "Validate, submit once, follow the task with a progress bar and print the result "
            "(the video URL, its expiry, the cost). Nothing is sent when the input is invalid.",
            width=78,
        ),
        epilog=GENERATE_EPILOG,
        formatter_class=_Formatter,
    )
    gen.add_argument("prompt", help="what the video should show")
    gen.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        metavar="ID",
        help=f"model id, any case: {', '.join(CATALOG)} (default {DEFAULT_MODEL})",
    )
    gen.add_argument("--duration", "-d", type=int, help="seconds (see `reelbot models`)")
    resolutions = [str(r) for r in _everywhere("resolutions")]
    gen.add_argument(
        "--resolution",
        "-r",
        help=f"{', '.join(resolutions[:-1])} or {resolutions[-1]}, as the model allows",
    )
    gen.add_argument("--aspect-ratio", "-a", help=" or ".join(_everywhere("aspect_ratios")))
    gen.add_argument(
        "--image", "-i", action="append", default=[], metavar="PATH_OR_URL", help=_images_help()
    )
    gen.add_argument(
        "--mode",
        choices=list(_everywhere("modes")),
        help=f"{_who(lambda s: s.modes)}: how images are used",
    )
    gen.add_argument(
        "--video",
        metavar="URL",
        help=f"{_who(lambda s: s.max_reference_videos)}: a reference video URL (motion)",
    )
    gen.add_argument(
        "--negative-prompt", help=f"{_who(lambda s: s.negative_prompt)}: what to avoid"
    )
    gen.add_argument(
        "--seed", type=int, help=f"{_who(lambda s: s.int_param('seed'))}: {_int_range('seed')}"
    )
    gen.add_argument(
        "--samples",
        type=int,
        dest="sample_count",
        help=f"{_who(lambda s: s.int_param('sample_count'))}: videos per request, "
        f"{_int_range('sample_count')}",
    )
    gen.add_argument(
        "--audio",
        action="store_true",
        default=None,
        help=f"{_who(lambda s: s.generate_audio)}: generate audio",
    )
    gen.add_argument(
        "--people",
        choices=_choice_values("person_generation"),
        help=f"{_who(lambda s: s.choice_param('person_generation'))}: person generation",
    )
    gen.add_argument(
        "--resize",
        choices=_choice_values("resize_mode"),
        help=f"{_who(lambda s: s.choice_param('resize_mode'))}: fit of the first frame",
    )
    gen.add_argument(
        "--enhance-prompt",
        action="store_true",
        default=None,
        help=f"{_who(lambda s: s.enhance_prompt)}: let the API enhance the prompt",
    )
    gen.add_argument(
        "--fake",
        action="store_true",
        help="use the built-in stand-in API (no key, no cost, a few seconds)",
    )
    gen.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    gen.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop following the job after this long (default: JOB_TIMEOUT)",
    )

    jobs = sub.add_parser(
        "jobs",
        help="recent jobs in the database (any front end)",
        description="List the recent jobs in the database (from the bot and the terminal), "
        "newest first. Needs no key.",
    )
    jobs.add_argument("--limit", "-n", type=int, default=20, help="how many (default 20)")
    jobs.add_argument("--json", action="store_true", help="one JSON object per line")

    status = sub.add_parser(
        "status",
        help="look a job up again at APIMart and print it",
        description="Look a job (by number or task id) up again at APIMart and print where it "
        "stands; with --timeout, follow it while it runs. Needs APIMART_API_KEY.",
    )
    status.add_argument("job", metavar="JOB_OR_TASK_ID", help="a job number or a task id")
    status.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    status.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="follow a running task at most this long (default: one look)",
    )

    sub.add_parser(
        "models",
        help="what each model accepts",
        description="What each model accepts (durations, resolutions, images, extras), "
        "with the `generate` flag next to each API field. Needs no key.",
    )
    sub.add_parser(
        "check",
        help="validate the settings and ask APIMart for the balance",
        description="Say which .env and database reelbot uses, list every missing or invalid "
        "setting, and ask APIMart (at APIMART_BASE_URL) for the balance. Needs APIMART_API_KEY.",
    )
    db.add_commands(sub)

    fake = sub.add_parser(
        "fake-api",
        help="serve the stand-in APIMart on 127.0.0.1",
        description="Serve the stand-in APIMart (no real video, no cost) to try reelbot with: "
        "it prints the APIMART_BASE_URL and APIMART_API_KEY to use. Ctrl-C stops it.",
        formatter_class=_DefaultsFormatter,
    )
    fake.add_argument("--host", default="127.0.0.1", help="address to listen on")
    fake.add_argument("--port", type=int, default=8765, help="port to listen on")
    fake.add_argument(
        "--api-key",
        default=None,
        help="accept only this key (by default any non-empty key is accepted)",
    )
    fake.add_argument(
        "--balance", type=float, default=100.0, help="starting balance; tasks debit their cost"
    )
    fake.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per real second (60 = a 4-minute job in 4 s)",
    )


def dispatch(args: argparse.Namespace) -> int | None:
    """Run a terminal verb; None when the verb belongs to another front end."""
    if args.command == "models":
        return _models()
    if args.command == "generate":
        return _generate(args)
    if args.command in ("jobs", "status"):
        from bot.terminal import lookup

        settings = load_settings(require=("APIMART_API_KEY",) if args.command == "status" else ())
        setup_logging_from(
            settings, stderr_level="DEBUG" if settings.LOG_LEVEL == "DEBUG" else "WARNING"
        )
        if args.command == "jobs":
            return asyncio.run(lookup.list_jobs(settings, limit=args.limit, as_json=args.json))
        return asyncio.run(
            lookup.status(settings, args.job, as_json=args.json, timeout=args.timeout)
        )
    if args.command == "check":
        return _check()
    if args.command == "db":
        return db.dispatch(args)
    if args.command == "fake-api":
        from bot.testing.fake_apimart import run_fake_api

        try:
            run_fake_api(
                host=args.host,
                port=args.port,
                api_key=args.api_key,
                time_scale=args.time_scale,
                balance=args.balance,
            )
        except OSError as exc:  # the port is taken (or the host is not this machine's)
            why = exc.strerror or type(exc).__name__
            print(f"error: cannot listen on {args.host}:{args.port}: {why}", file=sys.stderr)
            return EXIT_INVALID
        return EXIT_OK
    return None


#: The `generate` option for each API field, shown by `reelbot models` beside the field name.
API_FIELD_FLAGS = {
    "duration": "--duration",
    "resolution": "--resolution",
    "aspect_ratio": "--aspect-ratio",
    "images": "--image",
    "generation_type": "--mode",
    "video_urls": "--video",
    "negative_prompt": "--negative-prompt",
    "seed": "--seed",
    "sample_count": "--samples",
    "generate_audio": "--audio",
    "person_generation": "--people",
    "resize_mode": "--resize",
    "enhance_prompt": "--enhance-prompt",
}
#: The table's columns, labelled with the API field and the option that sets it.
_COLUMN_LABELS = {
    "durations (s)": "duration, s (--duration)",
    "resolutions": "resolution (--resolution)",
    "aspect ratios": "aspect_ratio (--aspect-ratio)",
    "images": "images (--image)",
}


def models_text() -> str:
    """`reelbot models`: the catalog, each value under the `generate` option that sets it."""
    lines = []
    for spec in CATALOG.values():
        row = describe(spec, flags=API_FIELD_FLAGS)
        lines.append(f"{row['model']}  (--model {row['model']})")
        for key, value in row.items():
            if key == "model":
                continue
            if key == "extras":
                extras = value.split("; ")
                lines.append(f"  {'extras':<30} {extras[0]}")
                lines += [f"  {'':<30} {extra}" for extra in extras[1:]]
                continue
            lines.append(f"  {_COLUMN_LABELS.get(key, key):<30} {value}")
    return "\n".join(lines)


def _models() -> int:
    print(models_text())
    return EXIT_OK


def _database_shown(settings: Settings) -> str:
    """The database, without a password: a file path, or the server and database name."""
    path = settings.sqlite_path()
    if path is not None:
        return f"SQLite file {path.resolve()}"
    if "sqlite" in settings.DATABASE_URL:
        return "SQLite in memory"
    from sqlalchemy.engine import make_url

    url = make_url(settings.DATABASE_URL)
    return f"PostgreSQL {url.host or 'localhost'}:{url.port or 5432}/{url.database}"


def _check() -> int:
    from bot.core.config import find_env_file, user_env_file

    env_file = find_env_file()
    shown = str(env_file.resolve()) if env_file else f"none (no ./.env, no {user_env_file()})"
    print(f".env      {shown}")
    settings = load_settings(require=("APIMART_API_KEY",), env_file=env_file)
    setup_logging_from(settings)
    print(f"database  {_database_shown(settings)}")
    print(f"APIMart   {settings.APIMART_BASE_URL}")
    if settings.DISCORD_TOKEN is None:
        print(
            "warning: DISCORD_TOKEN is not set (an empty value counts as not set): "
            "`reelbot run` and `reelbot sync` need it; `generate` does not",
            file=sys.stderr,
        )

    async def ask() -> int:
        import aiohttp

        from bot.core.apimart import ApimartClient, ApimartError
        from bot.terminal import advice

        assert settings.APIMART_API_KEY is not None
        async with aiohttp.ClientSession() as session:
            client = ApimartClient(
                session,
                settings.APIMART_BASE_URL,
                settings.APIMART_API_KEY,
                timeout=settings.API_TIMEOUT,
            )
            try:
                balance = await client.balance()
            except ApimartError as exc:
                print(f"error: {advice.for_error(exc, settings.APIMART_BASE_URL)}", file=sys.stderr)
                return EXIT_API
        remaining = "unlimited" if balance.unlimited else balance.remaining
        print(f"balance   {remaining} (used {balance.used})")
        print("settings OK")
        return EXIT_OK

    return asyncio.run(ask())


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: use seconds, more than 0 (at most a week)")
    return value


#: The largest local image any model accepts: a larger file is refused from its size before it
#: is read, and no read goes further (a file that grows, an endless one like /dev/zero).
IMAGE_READ_LIMIT = max(spec.image_max_bytes for spec in CATALOG.values())


def _read_image(ref: str) -> Any:
    """A URL stays a URL (passed through); a local file becomes an ImageFile to upload."""
    from bot.core.jobs import ImageFile

    if ref.startswith(("http://", "https://")):
        return ref
    path = Path(ref).expanduser()
    data = read_local_image(path, ref, limit=IMAGE_READ_LIMIT)
    # Trust the bytes, not the name: a PDF renamed .png must be refused here, not by the API.
    content_type = sniff_image_type(data) or "application/octet-stream"
    return ImageFile(data=data, filename=path.name, content_type=content_type)


def resolve_model(name: str) -> str:
    """The catalog's id for `name` (any case), or one clear problem with the closest id."""
    from bot.core.catalog import get_model
    from bot.core.request import Problem

    try:
        return get_model(name).id
    except KeyError:
        pass
    by_lower = {model_id.lower(): model_id for model_id in CATALOG}
    close = difflib.get_close_matches(name.strip().lower(), list(by_lower), n=1, cutoff=0.6)
    hint = f"did you mean {by_lower[close[0]]}?" if close else f"use {', '.join(CATALOG)}"
    raise RequestInvalid([Problem("--model", f"unknown model {name!r}; {hint}")])


def _generate(args: argparse.Namespace) -> int:
    stop: Any = None
    try:
        stop = _new_interruption()
        return _generate_job(args, stop)
    except KeyboardInterrupt:
        if stop is not None and stop.signal_name:
            raise  # a second signal: the user insists; the job may exist, say nothing false
        report_interrupted_before_start(as_json=args.json)
        return EXIT_INTERRUPTED


def _new_interruption() -> Any:
    from bot.terminal.generate import Interruption

    return Interruption()


def _generate_job(args: argparse.Namespace, stop: Any) -> int:
    from bot.core.jobs import with_pending_uploads

    # The input first: a wrong model or duration is said before any setting is looked at.
    try:
        model = resolve_model(args.model)
        images = [_read_image(ref) for ref in args.image]
        refs, files = with_pending_uploads(images)
        request = build_request(
            model=model,
            prompt=args.prompt,
            duration=args.duration,
            resolution=args.resolution,
            aspect_ratio=args.aspect_ratio,
            images=refs,
            mode=args.mode,
            video_url=args.video,
            negative_prompt=args.negative_prompt,
            seed=args.seed,
            sample_count=args.sample_count,
            generate_audio=args.audio,
            person_generation=args.people,
            resize_mode=args.resize,
            enhance_prompt=args.enhance_prompt,
        )
        from bot.core.jobs import JobService

        JobService.check_files(request, files)
    except RequestInvalid as exc:
        _report_invalid(exc, as_json=args.json)
        return EXIT_INVALID
    for note in request.notes():
        print(f"note: {note}", file=sys.stderr)
    settings = _generate_settings(args)
    # The terminal shows a progress bar and the result; logs only for warnings (or DEBUG),
    # while LOG_FILE, when set, gets the configured level.
    setup_logging_from(
        settings, stderr_level="DEBUG" if settings.LOG_LEVEL == "DEBUG" else "WARNING"
    )

    from bot.terminal.generate import (
        format_outcome,
        interrupted_text,
        outcome_json,
        run_generate,
    )

    if args.timeout is not None:
        settings = settings.model_copy(update={"JOB_TIMEOUT": args.timeout})
    from bot.core.controls.admission import Refused

    started = time.monotonic()
    try:
        job = asyncio.run(
            run_generate(settings, request, files, fake=args.fake, quiet=args.json, stop=stop)
        )
    except Refused as refusal:
        # The operator's caps (OPERATOR_DAILY_SPEND / OPERATOR_MONTHLY_SPEND) apply here too.
        message = _plain_times(refusal.message)
        if args.json:
            from bot.core.job import outcome_record

            print(json.dumps(outcome_record(status="refused", error=message), ensure_ascii=False))
        print(f"refused: {message}", file=sys.stderr)
        return EXIT_API
    wall = time.monotonic() - started
    base_url = "the stand-in API" if args.fake else settings.APIMART_BASE_URL
    if args.json:
        outcome = outcome_json(job, base_url=base_url, fake=args.fake, wall_s=wall)
        print(json.dumps(outcome, ensure_ascii=False))
    else:
        print(format_outcome(job, base_url=base_url, fake=args.fake, wall_s=wall))
    if stop.signal_name and not job.state.terminal:
        print(interrupted_text(job), file=sys.stderr)
        return EXIT_INTERRUPTED
    return exit_code(job)


def exit_code(job: Any) -> int:
    """0 a video, 1 the task failed (or ended unknown), 3 nothing reached APIMart, 4 running."""
    if job.state.value == "completed" and job.video_urls:
        return EXIT_OK
    if not job.state.terminal:
        return EXIT_RUNNING
    return EXIT_TASK_FAILED if job.task_id else EXIT_API


def _generate_settings(args: argparse.Namespace) -> Settings:
    if not args.fake:
        return load_settings(require=("APIMART_API_KEY",))
    from pydantic import SecretStr

    from bot.terminal.generate import FAKE_API_KEY

    settings = load_settings()
    return settings.model_copy(
        update={
            "APIMART_API_KEY": SecretStr(FAKE_API_KEY),
            "POLL_INITIAL_DELAY": 0.2,
            "POLL_INTERVAL": 0.2,
            "POLL_MAX_INTERVAL": 1.0,
        }
    )


def _plain_times(text: str) -> str:
    """Discord's `<t:1700000000:R>` as a UTC time a terminal can show."""
    import re
    from datetime import UTC, datetime

    def utc(match: re.Match[str]) -> str:
        when = datetime.fromtimestamp(int(match[1]), UTC)
        return when.strftime("%Y-%m-%d %H:%M UTC")

    return re.sub(r"<t:(\d+):\w>", utc, text)


def _report_invalid(exc: RequestInvalid, *, as_json: bool) -> None:
    if as_json:
        from bot.core.job import outcome_record

        print(json.dumps(outcome_record(status="invalid", error=str(exc))))
    for problem in exc.problems:
        print(f"error: {problem}", file=sys.stderr)
