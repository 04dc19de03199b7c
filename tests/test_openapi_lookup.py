"""A fresh clone skips the spec-based tests and says how to run them; CI fails instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import openapi


@pytest.fixture
def no_spec_beside(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(openapi, "BESIDE_CHECKOUT", tmp_path / "shared" / "openapi.json")
    monkeypatch.delenv(openapi.ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)


@pytest.mark.usefixtures("no_spec_beside")
def test_a_bare_clone_skips_and_says_how_to_supply_the_spec() -> None:
    with pytest.raises(pytest.skip.Exception) as skipped:
        openapi.spec_path()
    assert openapi.ENV in str(skipped.value)
    assert "discord-api-spec" in str(skipped.value)


@pytest.mark.usefixtures("no_spec_beside")
def test_on_ci_a_missing_spec_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        openapi.spec_path()
    assert openapi.ENV in str(failed.value)


@pytest.mark.usefixtures("no_spec_beside")
def test_a_wrong_path_in_the_variable_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(openapi.ENV, str(tmp_path / "nope.json"))
    with pytest.raises(pytest.fail.Exception) as failed:
        openapi.spec_path()
    assert "nope.json" in str(failed.value)


@pytest.mark.usefixtures("no_spec_beside")
def test_the_variable_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = tmp_path / "openapi.json"
    spec.write_text('{"openapi": "3.1.0"}')
    monkeypatch.setenv(openapi.ENV, str(spec))
    assert openapi.spec_path() == spec
    assert openapi.discord_openapi()["openapi"] == "3.1.0"
