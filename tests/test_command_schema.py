"""Contract: the commands `reelbot sync` sends are what Discord's own schema accepts.

The schema is Discord's OpenAPI description (found as `tests/openapi.py` says; a clone without
it skips that test). Naming rules the schema cannot express are checked directly; the menus are
compared with choices written out here, and those with the catalog's raw data.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bot.core.catalog import CATALOG
from bot.discord.launcher import command_payload
from tests.openapi import discord_openapi

NAME = re.compile(r"^[-_\w]{1,32}$")
SUBCOMMAND, GROUP = 1, 2


@pytest.fixture(scope="module")
def payload() -> list[dict[str, Any]]:
    return command_payload()


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    spec = discord_openapi()
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:discord", resource)
    schema = {"$ref": "urn:discord#/components/schemas/ApplicationCommandUpdateRequest"}
    return Draft202012Validator(schema, registry=registry)


def test_every_command_validates_against_discords_schema(
    payload: list[dict[str, Any]], validator: Draft202012Validator
) -> None:
    assert [c["name"] for c in payload] == ["video", "videoadmin"]
    for command in payload:
        errors = sorted(validator.iter_errors(command), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_video_is_for_servers_only(payload: list[dict[str, Any]]) -> None:
    """Not in DMs, where anyone sharing a server could spend its balance privately."""
    for command in payload:
        assert command["contexts"] == [0]  # GUILD only: not BOT_DM (1) nor PRIVATE_CHANNEL (2)
        assert command["dm_permission"] is False  # the older flag, for clients that read it


@pytest.mark.e2e  # a real `reelbot commands` process
def test_the_cli_prints_the_same_list() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bot", "commands"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert json.loads(out.stdout) == command_payload()


def _check_options(path: str, options: list[dict[str, Any]]) -> None:
    assert len(options) <= 25, path
    names = [o["name"] for o in options]
    assert len(names) == len(set(names)), f"{path}: duplicate option names"
    required = [bool(o.get("required")) for o in options]
    assert required == sorted(required, reverse=True), f"{path}: required options must come first"
    for option in options:
        where = f"{path} {option['name']}"
        assert NAME.match(option["name"]) and option["name"] == option["name"].lower(), where
        assert 1 <= len(option["description"]) <= 100, where
        assert len(option.get("choices") or []) <= 25, where
        for choice in option.get("choices") or []:
            assert 1 <= len(choice["name"]) <= 100, where
        if option["type"] in (SUBCOMMAND, GROUP):
            _check_options(where, option.get("options") or [])


def test_discords_naming_rules(payload: list[dict[str, Any]]) -> None:
    for command in payload:
        assert NAME.match(command["name"]) and command["name"] == command["name"].lower()
        assert 1 <= len(command["description"]) <= 100
        _check_options(command["name"], command.get("options") or [])


def _sub(
    payload: list[dict[str, Any]], name: str, command: str = "video"
) -> dict[str, dict[str, Any]]:
    top = next(c for c in payload if c["name"] == command)
    sub = next(o for o in top["options"] if o["name"] == name)
    return {o["name"]: o for o in sub.get("options") or []}


def _values(option: dict[str, Any]) -> list[Any]:
    return [c["value"] for c in option["choices"]]


def _shown(option: dict[str, Any]) -> list[str]:
    """What a member reads in the option's menu."""
    return [c["name"] for c in option["choices"]]


#: The menus a member sees, written out. A change to the catalog or to the command builder
#: changes the payload; this table is the review step that makes it visible.
CHOICES: dict[tuple[str, str], list[Any]] = {
    ("omni", "duration"): [4, 6, 8, 10],
    ("omni", "resolution"): ["720p", "1080p", "4k"],
    ("omni", "aspect_ratio"): ["16:9", "9:16"],
    ("omni", "mode"): ["frame", "reference"],
    ("veo", "quality"): ["fast", "quality"],
    ("veo", "duration"): [4, 6, 8],
    ("veo", "resolution"): ["720p", "1080p", "4K"],
    ("veo", "aspect_ratio"): ["16:9", "9:16"],
    ("veo", "people"): ["allow_adult", "disallow"],
    ("veo", "resize"): ["pad", "crop"],
    ("sora", "model"): ["sora-2", "sora-2-pro"],
    ("sora", "duration"): [4, 8, 12, 16, 20],
    ("sora", "resolution"): ["720p", "1024p", "1080p"],
    ("sora", "aspect_ratio"): ["16:9", "9:16"],
}


def test_every_menu_is_exactly_the_written_out_choices(payload: list[dict[str, Any]]) -> None:
    shown = {
        (family, name): _values(option)
        for family in ("omni", "veo", "sora", "models", "jobs")
        for name, option in _sub(payload, family).items()
        if option.get("choices")
    }
    assert shown == CHOICES
    for (family, name), values in CHOICES.items():
        assert _shown(_sub(payload, family)[name]) == [str(v) for v in values], (family, name)


def _catalog_values(family: str, field: str) -> set[Any]:
    """Every value one field takes over a family's models, read from the ModelSpec entries."""
    return {v for spec in CATALOG.values() if spec.family == family for v in getattr(spec, field)}


def test_the_written_out_choices_are_what_the_catalog_documents() -> None:
    """The table above against the catalog's raw data: a model added to a family, or a value
    the API starts to accept, fails here until the menus follow."""
    for family in ("omni", "veo", "sora"):
        for field, option in (
            ("durations", "duration"),
            ("resolutions", "resolution"),
            ("aspect_ratios", "aspect_ratio"),
        ):
            assert set(CHOICES[family, option]) == _catalog_values(family, field), (family, field)
    (omni,) = (s for s in CATALOG.values() if s.family == "omni")
    assert CHOICES["omni", "mode"] == list(omni.modes)
    assert CHOICES["sora", "model"] == [s.id for s in CATALOG.values() if s.family == "sora"]
    veos = [s.id for s in CATALOG.values() if s.family == "veo"]
    assert veos == ["veo3.1-fast-official", "veo3.1-quality-official"]  # quality = the tier
    for spec in CATALOG.values():
        if spec.family == "veo":
            params = {p.name: list(p.choices) for p in spec.choice_params}
            assert params == {
                "person_generation": CHOICES["veo", "people"],
                "resize_mode": CHOICES["veo", "resize"],
            }
            seed = spec.int_param("seed")
            assert seed is not None and (seed.minimum, seed.maximum) == (0, 4_294_967_295)


def test_the_other_options_a_member_fills_in(payload: list[dict[str, Any]]) -> None:
    o, v, s = _sub(payload, "omni"), _sub(payload, "veo"), _sub(payload, "sora")
    attachment, boolean, string = 11, 5, 3
    assert [n for n, opt in o.items() if opt["type"] == attachment] == [
        "image",
        "image2",
        "image3",
        "reference_video",
    ]
    assert [n for n, opt in v.items() if opt["type"] == attachment] == ["first_frame", "last_frame"]
    assert [n for n, opt in s.items() if opt["type"] == attachment] == ["image"]
    assert (v["seed"]["min_value"], v["seed"]["max_value"]) == (0, 4_294_967_295)
    assert v["audio"]["type"] == boolean and v["negative_prompt"]["type"] == string
    for family in (o, v, s):
        assert [n for n, opt in family.items() if opt.get("required")] == ["prompt"]
    assert _sub(payload, "models") == {} and _sub(payload, "jobs") == {}
    assert _sub(payload, "usage") == {}


def test_videoadmin_is_for_manage_server(payload: list[dict[str, Any]]) -> None:
    """Hidden from members without Manage Server (bit 5 = 32) unless an admin overrides it;
    the cog checks the permission again at run time."""
    admin = next(c for c in payload if c["name"] == "videoadmin")
    assert str(admin["default_member_permissions"]) == "32"
    assert [o["name"] for o in admin["options"]] == [
        "settings",
        "model",
        "limit",
        "role",
        "block",
        "unblock",
        "words",
        "usage",
        "balance",
        "alerts",
    ]
    assert all(o["type"] == SUBCOMMAND for o in admin["options"])
    video = next(c for c in payload if c["name"] == "video")
    assert video.get("default_member_permissions") is None  # every member may make videos
    assert "usage" in [o["name"] for o in video["options"]]


def test_videoadmin_options_are_as_the_issue_names_them(payload: list[dict[str, Any]]) -> None:
    model = _sub(payload, "model", "videoadmin")
    assert list(model) == ["model", "enabled", "max_resolution", "max_duration"]
    assert _values(model["model"]) == list(CATALOG)
    assert model["enabled"]["type"] == 5 and model["max_duration"]["type"] == 4
    limit = _sub(payload, "limit", "videoadmin")
    assert _values(limit["name"]) == [
        "member_concurrent",
        "member_daily_jobs",
        "member_daily_spend",
        "member_monthly_spend",
        "member_cooldown_seconds",
        "server_concurrent",
        "server_daily_spend",
        "server_monthly_spend",
    ]
    assert limit["value"]["type"] == 3
    role = _sub(payload, "role", "videoadmin")
    assert role["role"]["type"] == 8 and set(_values(role["name"])) <= set(_values(limit["name"]))
    assert _sub(payload, "block", "videoadmin")["member"]["type"] == 6
    assert _sub(payload, "unblock", "videoadmin")["member"]["type"] == 6
    words = _sub(payload, "words", "videoadmin")
    assert _values(words["action"]) == ["add", "remove", "list"] and "phrase" in words
    assert _values(_sub(payload, "usage", "videoadmin")["period"]) == [
        "today",
        "7d",
        "30d",
        "month",
    ]
    alerts = _sub(payload, "alerts", "videoadmin")["channel"]
    assert alerts["type"] == 7 and 0 in alerts["channel_types"]  # text (and announcement)
