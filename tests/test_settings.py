"""Settings as a new operator meets them: `.env.example` copied, one mistake or several."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.config import Settings, SettingsError, find_env_file, load_settings

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = ROOT / ".env.example"
#: Lines in .env.example that show an example value rather than the default.
EXAMPLES = {
    "DATABASE_URL",
    "WEBHOOK_PUBLIC_URL",
    "LOG_FILE",
    "SHARD_COUNT",
    "SHARD_IDS",
    "OPERATOR_DAILY_SPEND",
    "OPERATOR_MONTHLY_SPEND",
    "PRICES_FILE",
}
#: Settings an operator does not set (test plumbing, and the image's own flag).
INTERNAL = {
    "DISCORD_API_BASE",
    "DISCORD_GATEWAY_URL",
    "REELBOT_IN_CONTAINER",
    "WEBHOOK_LISTEN",  # the deprecated name of HTTP_LISTEN
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


def problems(env_file: Path | None, *require: str) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(require=require, env_file=env_file)
    return caught.value.problems


def test_a_copied_env_example_reports_the_empty_key_as_missing(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    shutil.copy(ENV_EXAMPLE, env)
    found = problems(env, "APIMART_API_KEY")
    assert found == [next(p for p in found if p.startswith("APIMART_API_KEY is missing"))]
    # And an empty Discord token is not a token either.
    assert load_settings(env_file=env).DISCORD_TOKEN is None


def test_env_example_has_only_the_secrets_active_and_shows_every_default() -> None:
    active, shown = {}, {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"([A-Z_]+)=(.*)", line):
            active[m[1]] = m[2]
        elif m := re.fullmatch(r"# ([A-Z_]+)=(.*)", line):
            shown[m[1]] = m[2]
    assert active == {"DISCORD_TOKEN": "", "APIMART_API_KEY": ""}
    assert set(Settings.model_fields) - INTERNAL == set(active) | set(shown)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for name, value in shown.items():
        if name in EXAMPLES:
            continue
        given = Settings(_env_file=None, **{name: value})  # type: ignore[call-arg]
        assert getattr(given, name) == getattr(defaults, name), name


def test_a_key_in_env_is_not_missing_because_another_setting_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("APIMART_API_KEY=sk-in-the-file\n")
    monkeypatch.setenv("POLL_INTERVAL", "soon")
    found = problems(env, "APIMART_API_KEY", "DISCORD_TOKEN")
    assert [p.split(":")[0] for p in found] == ["POLL_INTERVAL", "DISCORD_TOKEN is missing"]
    assert not any("sk-in-the-file" in p for p in found)


def test_a_cross_field_error_names_both_and_survives_another_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLL_INTERVAL", "10")
    monkeypatch.setenv("POLL_MAX_INTERVAL", "5")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    found = problems(None)
    assert any(
        p.startswith("POLL_MAX_INTERVAL: must be at least POLL_INTERVAL (10)") for p in found
    )
    assert any(p.startswith("LOG_LEVEL:") for p in found)
    assert not any(p.startswith("settings") for p in found)


def test_the_image_refuses_a_sqlite_file_off_its_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_IN_CONTAINER", "1")
    for url in ("sqlite:///./data/reelbot.db", "sqlite:////app/reelbot.db", "sqlite://"):
        monkeypatch.setenv("DATABASE_URL", url)
        (problem,) = problems(None)
        assert problem.startswith("DATABASE_URL: in the container")
        assert "use sqlite:////data/reelbot.db or unset DATABASE_URL" in problem
    # Unset, or set empty by `--env-file` (an empty value is no value): the volume.
    for value in ("", None):
        if value is None:
            monkeypatch.delenv("DATABASE_URL")
        else:
            monkeypatch.setenv("DATABASE_URL", value)
        assert load_settings(env_file=None).DATABASE_URL == "sqlite+aiosqlite:////data/reelbot.db"
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/reel")
    assert load_settings(env_file=None).DATABASE_URL.startswith("postgresql+asyncpg://")


def test_the_dockerfile_sets_the_flag_and_leaves_defaults_to_settings() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "REELBOT_IN_CONTAINER=1" in text
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any("DATABASE_URL" in line for line in code)


def test_dotenv_and_database_are_looked_up_in_documented_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "somewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    user_env = tmp_path / "user-config" / "reelbot" / ".env"
    assert find_env_file() is None
    user_env.parent.mkdir(parents=True)
    user_env.write_text("APIMART_API_KEY=sk-user\n")
    assert find_env_file() == user_env
    (work / ".env").write_text("APIMART_API_KEY=sk-here\n")
    assert find_env_file() == work / ".env"  # the current directory first

    settings = load_settings(env_file=None)
    data_dir = tmp_path / "user-data" / "reelbot"
    assert settings.sqlite_path() == data_dir / "reelbot.db"
    (work / "data").mkdir()
    (work / "data" / "reelbot.db").write_bytes(b"")
    assert load_settings(env_file=None).sqlite_path() == Path("data/reelbot.db")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'mine.db'}")
    assert load_settings(env_file=None).sqlite_path() == tmp_path / "mine.db"


def test_log_file_is_rotated(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "reelbot.log"
    script = (
        "import logging; from bot.core.logs import setup_logging\n"
        f"setup_logging('INFO', log_file={str(log)!r}, max_mb=1, backups=2)\n"
        "for i in range(30000): logging.getLogger('bot').info('line %05d %s', i, 'x' * 60)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["reelbot.log", "reelbot.log.1", "reelbot.log.2"]
    assert all(p.stat().st_size <= 1024 * 1024 for p in log.parent.iterdir())
    assert "line 29999" in log.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["APIMART_API_KEY", "DISCORD_TOKEN"])
@pytest.mark.parametrize("value", ["sk-abcdefgh1234\r", "sk-abcd efgh1234", "sk-abcdefgh\nX-A: 1"])
def test_a_secret_with_a_line_end_or_space_is_named_not_sent(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A Docker `--env-file` keeps a Windows `\\r`; a paste can bring a space. aiohttp then
    refuses the header at the first request (and `generate` used to hang on that)."""
    monkeypatch.setenv(name, value)
    found = problems(None, name)
    mine = [p for p in found if p.startswith(name)]
    assert len(mine) == 1, found
    assert "space or control character" in mine[0]
    assert "abcd" not in mine[0]
