"""Where the tests find Discord's OpenAPI spec, and what they do when it is not there.

The spec (github.com/discord/discord-api-spec, `specs/openapi.json`) is a 1 MB file that the
repository does not vendor. A user's fresh clone has no copy, so the tests that validate against
it SKIP there, with a reason that says how to supply one; CI has the copy beside the checkout,
and there a missing spec is a FAILURE, so the contract tests cannot silently stop running.

Looked up, in order:
1. `DISCORD_OPENAPI_SPEC`, a path to `openapi.json` (an error if set and not a file);
2. `../shared/discord-api-spec/openapi.json` beside the checkout (where CI keeps it).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

ENV = "DISCORD_OPENAPI_SPEC"
BESIDE_CHECKOUT = (
    Path(__file__).resolve().parents[2] / "shared" / "discord-api-spec" / "openapi.json"
)
HOW = (
    f"Discord's OpenAPI spec not found: set {ENV} to a copy of openapi.json "
    "(https://github.com/discord/discord-api-spec, specs/openapi.json) "
    f"or place it at {BESIDE_CHECKOUT}"
)


def on_ci() -> bool:
    """CI services (and `.ci/run`) set CI=true; there the spec is required."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def spec_path() -> Path:
    """The spec's path; skips the calling test without it (fails on CI or if ENV is wrong)."""
    configured = os.environ.get(ENV, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            pytest.fail(f"{ENV}={configured} is not a file; point it at Discord's openapi.json")
        return path
    if BESIDE_CHECKOUT.is_file():
        return BESIDE_CHECKOUT
    if on_ci():
        pytest.fail(f"{HOW} (CI=true: the contract tests must run on CI)")
    pytest.skip(HOW)


@functools.cache
def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def discord_openapi() -> dict[str, Any]:
    """The parsed spec (read once per test run), or skip/fail as `spec_path` says."""
    return _load(spec_path())
