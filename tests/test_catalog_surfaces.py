"""The catalog is the only source: every menu, description and help text follows it.

A member reads limits in three places (slash-command option descriptions, `reelbot generate
--help`, `/video models`) and the README; if one of them states a number the catalog does not
hold, it lies the day the catalog changes. So: every number in those texts must be catalog
data; a sixth model added to the catalog shows up everywhere; and the production source holds
no resolution, size, lifetime or list-of-seconds literal outside `bot/core/catalog.py`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.core import catalog
from bot.core.catalog import (
    CATALOG,
    DEFAULT_MODEL,
    FAMILIES,
    SORA_IMAGE_FORMATS,
    ImageStyle,
    MiB,
    ModelSpec,
    size_text,
    union,
)
from bot.core.request import RequestInvalid, build_request
from bot.discord import render
from bot.discord.launcher import command_payload
from bot.terminal.cli import resolve_model

ROOT = Path(__file__).resolve().parents[1]
#: A number as a text states it: `720p`, `4K`, `16:9`, `10 MB`, `3.1`, `4294967295`.
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:p\b|[kK]\b| MB\b|:\d+)?")


def _numbers(text: str) -> set[str]:
    return {m.group(0).lower() for m in NUMBER.finditer(text)}


def _catalog_numbers(specs: list[ModelSpec]) -> set[str]:
    """Every number the catalog holds for these models, spelled as a text would."""
    found: set[str] = set()
    for spec in specs:
        values: list[Any] = [
            *spec.durations,
            *spec.resolutions,
            *spec.aspect_ratios,
            *spec.image_counts,
            *(n for counts in spec.modes.values() for n in counts),
            spec.default_duration,
            size_text(spec.image_max_bytes),
            spec.max_reference_videos,
        ]
        for param in spec.int_params:
            values += [param.minimum, param.maximum]
        found |= {str(v).lower() for v in values}
        # Names may carry numbers (`Veo 3.1`, `sora-2`): those are names, not limits.
        found |= _numbers(spec.id) | _numbers(spec.label) | _numbers(spec.summary)
    return found


def _sub_command(payload: list[dict[str, Any]], family: str) -> dict[str, Any]:
    video = next(c for c in payload if c["name"] == "video")
    return next(o for o in video["options"] if o["name"] == family)


def _option(command: dict[str, Any], name: str) -> dict[str, Any]:
    return next(o for o in command["options"] if o["name"] == name)


def _choices(option: dict[str, Any]) -> list[Any]:
    return [c["value"] for c in option.get("choices", [])]


def _generate_help(capsys: pytest.CaptureFixture[str]) -> str:
    from bot.app import _parser

    with pytest.raises(SystemExit):
        _parser().parse_args(["generate", "--help"])
    return capsys.readouterr().out


def _generate_parser() -> argparse.ArgumentParser:
    from bot.app import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    generate: argparse.ArgumentParser = sub.choices["generate"]
    return generate


def _cli_option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


@pytest.fixture
def fresh_cog() -> Iterator[None]:
    """`reelbot commands` loads `cogs.video` afresh; forget the copy built here afterwards."""
    yield
    sys.modules.pop("cogs.video", None)


# -- (a) every description and help string states catalog data -----------------------------


def test_slash_descriptions_state_only_catalog_data(fresh_cog: None) -> None:
    payload = command_payload()
    for family, models in FAMILIES.items():
        command = _sub_command(payload, family)
        first = CATALOG[models[0]]
        allowed = _catalog_numbers([CATALOG[m] for m in models])
        for text in [command["description"], *(o["description"] for o in command["options"])]:
            assert _numbers(text) <= allowed, (family, text)
        # The defaults an omitted option picks are the family's first model's.
        assert f"default {first.default_duration}" in _option(command, "duration")["description"]
        assert (
            f"default {first.default_resolution}" in _option(command, "resolution")["description"]
        )
        assert (
            f"default {first.default_aspect_ratio}"
            in _option(command, "aspect_ratio")["description"]
        )
        # The menus offer exactly what some model of the family accepts.
        assert _choices(_option(command, "duration")) == list(union("durations", models))
        assert _choices(_option(command, "resolution")) == list(union("resolutions", models))
        assert _choices(_option(command, "aspect_ratio")) == list(union("aspect_ratios", models))
        # An image option that names formats names exactly the model's.
        formats = "/".join(f.removeprefix("image/") for f in first.image_formats)
        for option in command["options"]:
            if "jpeg" in option["description"]:
                assert f"({formats}," in option["description"], option


def test_sora_descriptions_name_each_model_and_its_limits(fresh_cog: None) -> None:
    sora = _sub_command(command_payload(), "sora")
    models = FAMILIES["sora"]
    assert _choices(_option(sora, "model")) == list(models)
    text = _option(sora, "model")["description"]
    for model_id in models:
        assert f"{model_id} (" in text and CATALOG[model_id].resolutions[-1] in text
    image = _option(sora, "image")["description"]
    assert size_text(CATALOG[models[0]].image_max_bytes) in image


def test_cli_help_and_choices_come_from_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _generate_parser()
    model = _cli_option(parser, "--model")
    # Not argparse choices: `reelbot generate` resolves the id itself (any case, did-you-mean).
    assert model.default == DEFAULT_MODEL and all(m in (model.help or "") for m in CATALOG)
    assert all(resolve_model(m.upper()) == m for m in CATALOG)
    assert list(_cli_option(parser, "--mode").choices or ()) == list(union("modes", tuple(CATALOG)))
    for flag, name in (("--people", "person_generation"), ("--resize", "resize_mode")):
        params = [s.choice_param(name) for s in CATALOG.values() if s.choice_param(name)]
        assert list(_cli_option(parser, flag).choices or ()) == list(params[0].choices)  # type: ignore[union-attr]
    for flag, name in (("--seed", "seed"), ("--samples", "sample_count")):
        param = next(p for s in CATALOG.values() for p in s.int_params if p.name == name)
        assert f"{param.minimum}..{param.maximum}" in (_cli_option(parser, flag).help or "")
    text = _generate_help(capsys)
    # The epilog's exit codes (0-4, 130) are the CLI's own numbers, not the catalog's.
    options_text = text.split("exit codes:")[0]
    assert _numbers(options_text) <= _catalog_numbers(list(CATALOG.values())), text
    for spec in CATALOG.values():
        for resolution in spec.resolutions:
            assert resolution.lower() in text.lower()


# -- (b) a sixth model: every surface follows ----------------------------------------------

SIXTH = ModelSpec(
    id="sora-3-test",
    family="sora",
    label="Sora 3 Test",
    summary="a model that exists only in this test",
    durations=(4, 8, 30),
    default_duration=8,
    resolutions=("720p", "1080p", "2160p"),
    default_resolution="720p",
    aspect_ratios=("16:9", "9:16", "1:1"),
    default_aspect_ratio="16:9",
    image_style=ImageStyle.URL_LIST,
    image_counts=(0, 1),
    image_roles=("reference image",),
    image_formats=SORA_IMAGE_FORMATS,
    image_max_bytes=10 * MiB,
    aspect_ratio_with_image=False,
)


@pytest.fixture
def sixth_model(monkeypatch: pytest.MonkeyPatch, fresh_cog: None) -> ModelSpec:
    """The catalog with one more model (restored by monkeypatch after the test)."""
    monkeypatch.setitem(CATALOG, SIXTH.id, SIXTH)
    monkeypatch.setitem(FAMILIES, SIXTH.family, (*FAMILIES[SIXTH.family], SIXTH.id))
    return SIXTH


def test_a_sixth_model_is_validated(sixth_model: ModelSpec) -> None:
    request = build_request(
        model=sixth_model.id, prompt="x", duration=30, resolution="2160p", aspect_ratio="1:1"
    )
    assert request.to_payload()["duration"] == 30
    with pytest.raises(RequestInvalid) as refused:
        build_request(model="sora-2", prompt="x", duration=30)
    assert "duration" in str(refused.value)


def test_a_sixth_model_reaches_the_slash_menus(sixth_model: ModelSpec) -> None:
    sora = _sub_command(command_payload(), "sora")
    assert sixth_model.id in _choices(_option(sora, "model"))
    assert 30 in _choices(_option(sora, "duration"))
    assert "2160p" in _choices(_option(sora, "resolution"))
    assert "1:1" in _choices(_option(sora, "aspect_ratio"))
    assert f"{sixth_model.id} (up to 2160p)" in _option(sora, "model")["description"]
    assert sixth_model.id in _option(sora, "resolution")["description"]


def test_a_sixth_model_reaches_the_cli(
    sixth_model: ModelSpec, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = _generate_parser()
    assert sixth_model.id in (_cli_option(parser, "--model").help or "")
    assert resolve_model(sixth_model.id) == sixth_model.id
    text = _generate_help(capsys)
    assert sixth_model.id in text and "2160p" in text and "1:1" in text


def test_a_sixth_model_reaches_models_and_the_readme_table(sixth_model: ModelSpec) -> None:
    (embed,) = render.models().embeds
    (field,) = [f for f in embed.fields if f.name and sixth_model.id in f.name]
    assert "4/8/30 (default 8)" in (field.value or "")
    table = catalog.markdown_table()
    (row,) = [line for line in table.splitlines() if sixth_model.id in line]
    assert "720p/1080p/2160p (default 720p)" in row


def test_the_sixth_model_is_gone_afterwards() -> None:
    assert SIXTH.id not in CATALOG and SIXTH.id not in FAMILIES["sora"]


# -- (c) no limit is written down twice ----------------------------------------------------

#: What a limit looks like written out, by kind. Names (`sora-2`, `Veo 3.1`) do not match.
LITERALS = {
    "a resolution": r"\b\d{3,4}p\b|\b[248][kK]\b",
    "an aspect ratio": r"\b(?:16:9|9:16|1:1|4:3|3:4|21:9)\b",
    "a size": r"\b\d+(?:\.\d+)?\s?Mi?B\b|\d+\s*\*\s*1024\s*\*\s*1024",
    "a lifetime in hours": r"\b\d{2,}\s?(?:h|hours)\b|\b72\b",
    "a list of seconds": r"[(\[]\s*\d+\s*,\s*\d+\s*,\s*\d+\s*[,)\]]|\"\d+\"\s*,\s*\"\d+\"",
}
SOURCES = [ROOT / "cogs", *(p for p in (ROOT / "bot").iterdir() if p.name != "testing")]
ONLY_HOME = ROOT / "bot" / "core" / "catalog.py"


def _production_files() -> list[Path]:
    files: list[Path] = []
    for source in SOURCES:
        files += [source] if source.is_file() else sorted(source.rglob("*.py"))
    return [f for f in files if f.suffix == ".py" and f != ONLY_HOME]


def test_limits_are_written_only_in_the_catalog() -> None:
    files = _production_files()
    assert ROOT / "cogs" / "video.py" in files and ROOT / "bot" / "terminal" / "cli.py" in files
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for kind, pattern in LITERALS.items():
                if re.search(pattern, line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {kind}: {line.strip()}")
    assert not found, "write these with bot.core.catalog's data:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ('resolution="Output resolution (default 720p)"', "a resolution"),
        ('help="e.g. 720p, 1080p, 4k"', "a resolution"),
        ('help="16:9 or 9:16"', "an aspect ratio"),
        ('image="A reference image (jpeg/png/webp, up to 10 MB)"', "a size"),
        ("return int(limit or 10 * 1024 * 1024)", "a size"),
        ("UPLOAD_URL_LIFETIME_S = 72 * 3600", "a lifetime in hours"),
        ('"keeps uploads only 72 hours"', "a lifetime in hours"),
        ("durations=(4, 6, 8),", "a list of seconds"),
        ('choices=["4", "8", "12"]', "a list of seconds"),
    ],
)
def test_the_literal_patterns_catch_what_the_old_code_had(line: str, kind: str) -> None:
    assert re.search(LITERALS[kind], line)
