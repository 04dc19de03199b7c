"""Settings from the environment and `.env`, checked once at startup.

As in python-discord's `bot/constants.py`: one pydantic-settings class, secrets as `SecretStr`,
and every default in this one class (`.env.example` only shows them, commented out).
`load_settings()` turns every problem (missing or invalid) into one `SettingsError` whose text
lists them all by variable name with how to fix each, so `reelbot` can print it and exit 2
instead of showing a traceback. Which settings are required depends on the command:
`generate` needs no Discord token, `run` does.

Where files go (documented in the README): `.env` is read from the current directory, else
from the user's config directory (`platformdirs`, e.g. `~/.config/reelbot/.env`); the default
SQLite database is `./data/reelbot.db` when that file already exists in the current directory,
else it lives in the user's data directory (e.g. `~/.local/share/reelbot/reelbot.db`), so
running `reelbot generate` from different folders does not scatter databases around. In the
container image (`REELBOT_IN_CONTAINER=1`, set by the Dockerfile) it is `/data/reelbot.db`, the
volume, and a SQLite file anywhere else is refused: it would vanish with the container.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

import platformdirs
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

APP_NAME = "reelbot"
#: The container's volume (the Dockerfile declares it).
CONTAINER_DATA_DIR = PurePosixPath("/data")
#: A database in the current directory wins when it exists (how reelbot always worked).
LOCAL_DATABASE = Path("data") / "reelbot.db"

HOW_TO_FIX = {
    "DISCORD_TOKEN": (
        "the bot token from https://discord.com/developers/applications → Bot → Reset Token "
        '(no token yet? try the offline demo: reelbot generate --fake "a red fox in snow")'
    ),
    "APIMART_API_KEY": "your key from APIMart's console (or try `reelbot generate --fake` without one)",
}
SECRETS = tuple(HOW_TO_FIX)


def user_env_file() -> Path:
    """The per-user `.env` (used when the current directory has none)."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / ".env"


def find_env_file(cwd: Path | None = None) -> Path | None:
    """The `.env` reelbot reads: the current directory's, else the user's; None if neither."""
    for candidate in ((cwd or Path.cwd()) / ".env", user_env_file()):
        if candidate.is_file():
            return candidate
    return None


def default_database_url(*, in_container: bool, cwd: Path | None = None) -> str:
    """Where the SQLite database goes when DATABASE_URL is not set (see the module text)."""
    if in_container:
        return f"sqlite+aiosqlite:///{CONTAINER_DATA_DIR / 'reelbot.db'}"
    local = (cwd or Path.cwd()) / LOCAL_DATABASE
    if local.is_file():
        return f"sqlite+aiosqlite:///./{LOCAL_DATABASE.as_posix()}"
    path = Path(platformdirs.user_data_dir(APP_NAME)) / "reelbot.db"
    return f"sqlite+aiosqlite:///{path}"


class SettingsError(Exception):
    """Every problem with the configuration, already worded for the operator."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        text = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"reelbot cannot start: {len(problems)} setting(s) need attention\n{text}\n"
            "Set them in the environment or in a .env file (see .env.example)."
        )


_CONFIG = SettingsConfigDict(
    env_file=".env",
    env_file_encoding="utf-8",
    extra="ignore",
    case_sensitive=True,
    # `APIMART_API_KEY=` (as copied from .env.example) means "not set", not "the empty key".
    env_ignore_empty=True,
)


class Secrets(BaseSettings):
    """The two secrets alone: read even when another setting is invalid, so one run can say
    whether they are missing without blaming a key that is in fact set in `.env`."""

    model_config = _CONFIG

    DISCORD_TOKEN: SecretStr | None = None
    APIMART_API_KEY: SecretStr | None = None


class Settings(Secrets):
    """Every knob of reelbot. The names are part of the product's interface.

    Fields are validated in declaration order; a check that involves two fields lives on the
    later one (it sees the earlier one in `info.data`), so it still runs, and names both,
    when some unrelated field is invalid — a model validator would be skipped then.
    """

    REELBOT_IN_CONTAINER: bool = False
    APIMART_BASE_URL: str = "https://api.apimart.ai"
    #: Empty means the default place (see `default_database_url`).
    DATABASE_URL: str = Field("", validate_default=True)
    POLL_INITIAL_DELAY: float = Field(5.0, gt=0, le=600)
    POLL_INTERVAL: float = Field(4.5, gt=0, le=600)
    POLL_MAX_INTERVAL: float = Field(60.0, gt=0, le=3600)
    POLL_CONCURRENCY: int = Field(16, ge=1, le=512)
    API_REQUESTS_PER_SECOND: float = Field(20.0, gt=0, le=10_000)
    API_TIMEOUT: float = Field(30.0, gt=0, le=600)
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: Also log to this file, rotated (LOG_FILE_MAX_MB per file, LOG_FILE_BACKUPS old files).
    LOG_FILE: Path | None = None
    LOG_FILE_MAX_MB: int = Field(10, ge=1, le=10_000)
    LOG_FILE_BACKUPS: int = Field(5, ge=0, le=100)
    WEBHOOK_PUBLIC_URL: str | None = None
    WEBHOOK_LISTEN: str = "0.0.0.0:8080"
    #: Used by the end-to-end tests and the offline demo to point discord.py at a local fake.
    DISCORD_API_BASE: str | None = None
    DISCORD_GATEWAY_URL: str | None = None

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("APIMART_BASE_URL", "WEBHOOK_PUBLIC_URL")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("DATABASE_URL")
    @classmethod
    def _async_driver(cls, value: str, info: ValidationInfo) -> str:
        """Accept plain `sqlite:///` and `postgresql://` URLs and pick the async driver."""
        in_container = bool(info.data.get("REELBOT_IN_CONTAINER"))
        if not value:
            return default_database_url(in_container=in_container)
        for plain, driver in (
            ("sqlite://", "sqlite+aiosqlite://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
        ):
            if value.startswith(plain):
                value = driver + value[len(plain) :]
                break
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite:///path/to/file.db or postgresql://user:pass@host/db")
        path = _sqlite_file(value)
        if in_container and value.startswith("sqlite") and (path is None or not _on_volume(path)):
            if path is None:
                where = "a database in memory"
            elif not path.is_absolute():
                where = "a relative path"
            else:
                where = f"{path}, outside the volume,"
            raise ValueError(
                f"in the container the SQLite file must be on the {CONTAINER_DATA_DIR} volume "
                f"({where} would vanish with the container): use "
                "sqlite:////data/reelbot.db or unset DATABASE_URL"
            )
        return value

    @field_validator("POLL_MAX_INTERVAL")
    @classmethod
    def _not_below_interval(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("POLL_INTERVAL")
        if interval is not None and value < interval:
            raise ValueError(f"must be at least POLL_INTERVAL ({interval:g})")
        return value

    @field_validator("WEBHOOK_LISTEN")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("use HOST:PORT, for example 0.0.0.0:8080")
        return value

    @property
    def webhook_listen(self) -> tuple[str, int]:
        host, _, port = self.WEBHOOK_LISTEN.rpartition(":")
        return host, int(port)

    def sqlite_path(self) -> Path | None:
        """The database file, so its folder can be created on first run."""
        path = _sqlite_file(self.DATABASE_URL)
        return None if path is None else Path(path)


def _sqlite_file(url: str) -> PurePosixPath | None:
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix):
        path = url[len(prefix) :].split("?", 1)[0]
        if path and path != ":memory:":
            return PurePosixPath(path)
    return None


def _on_volume(path: PurePosixPath) -> bool:
    return CONTAINER_DATA_DIR in path.parents and ".." not in path.parts


def _problem(err: dict[str, object]) -> str:
    loc = err.get("loc") or ()
    name = ".".join(str(p) for p in loc) if isinstance(loc, tuple) else str(loc)
    name = name or "settings"
    value = err.get("input")
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    # Never echo secrets: the tokens, nor a database URL (it may carry a password).
    hidden = name in HOW_TO_FIX or name == "DATABASE_URL" or isinstance(value, dict)
    shown = "" if hidden else f" (got {value!r})"
    return f"{name}: {message}{shown}"


def load_settings(
    *, require: tuple[str, ...] = (), env_file: Path | Literal["auto"] | None = "auto"
) -> Settings:
    """Read the settings; raise `SettingsError` listing every missing or invalid one.

    `env_file="auto"` looks the `.env` up as `find_env_file` does; None reads the environment
    alone (the tests).
    """
    if env_file == "auto":
        env_file = find_env_file()
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
        secrets: Secrets = settings
    except ValidationError as exc:
        problems += [_problem(dict(err)) for err in exc.errors()]
        # The secrets are read on their own, from the same sources, so one run reports all:
        # a key set in .env is not "missing" because POLL_INTERVAL is wrong.
        try:
            secrets = Secrets(_env_file=env_file)  # type: ignore[call-arg]
        except ValidationError:
            secrets = Secrets.model_construct()
    for name in require:
        if getattr(secrets, name) is None:
            problems.append(f"{name} is missing: {HOW_TO_FIX.get(name, 'set it')}")
    if problems or settings is None:
        raise SettingsError(problems)
    return settings
