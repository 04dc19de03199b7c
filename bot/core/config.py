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

import contextlib
import re
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.core.fetch import FetchPolicy, discord_cdn_policy

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

    @field_validator("DISCORD_TOKEN", "APIMART_API_KEY")
    @classmethod
    def _one_word(cls, value: SecretStr | None) -> SecretStr | None:
        """A token goes into an HTTP header: a `\\r` kept by Docker's `--env-file`, a pasted
        space or line end would make every request fail (aiohttp refuses such a header)."""
        if value is not None and re.search(r"[\s\x00-\x1f\x7f]", value.get_secret_value()):
            raise ValueError(
                "contains a space or control character (a Windows line end in the .env "
                "file?); the value is not shown"
            )
        return value


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
    POLL_CONCURRENCY: int = Field(64, ge=1, le=512)
    API_REQUESTS_PER_SECOND: float = Field(150.0, gt=0, le=10_000)
    API_TIMEOUT: float = Field(30.0, gt=0, le=600)
    #: How long a worker's claim on a job lasts without renewal (renewed every third of it):
    #: a worker that dies has its jobs taken over this long after its last renewal.
    LEASE_SECONDS: float = Field(30.0, ge=1, le=3600)
    #: How long (seconds) a job is followed before it is reported `unknown` (it may still be
    #: billed). The slowest models take well under an hour; two hours leaves room for queues.
    JOB_TIMEOUT: float = Field(7200.0, ge=60, le=7 * 86400)
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    #: Also log to this file, rotated (LOG_FILE_MAX_MB per file, LOG_FILE_BACKUPS old files).
    LOG_FILE: Path | None = None
    LOG_FILE_MAX_MB: int = Field(10, ge=1, le=10_000)
    LOG_FILE_BACKUPS: int = Field(5, ge=0, le=100)
    WEBHOOK_PUBLIC_URL: str | None = None
    #: Where `reelbot run` serves /healthz, /readyz, /metrics and the webhook's /callback.
    HTTP_LISTEN: str = "0.0.0.0:8080"
    #: Deprecated alias of HTTP_LISTEN (the webhook had its own listener before); see
    #: `_listen_alias`.
    WEBHOOK_LISTEN: str | None = None
    LOG_FORMAT: Literal["text", "json"] = "text"
    #: Discord sharding: the total number of shards, and which of them this process runs.
    SHARD_COUNT: int | None = Field(None, ge=1, le=65_536)
    SHARD_IDS: str | None = None
    #: Community controls: operator-wide spend caps in USD for all servers together (unset: no
    #: cap), how long finished jobs are kept, and an optional price table to start from.
    OPERATOR_DAILY_SPEND: Decimal | None = Field(None, ge=0, le=10_000_000, decimal_places=6)
    OPERATOR_MONTHLY_SPEND: Decimal | None = Field(None, ge=0, le=10_000_000, decimal_places=6)
    JOB_RETENTION_DAYS: int = Field(90, ge=1, le=36_500)
    PRICES_FILE: Path | None = None
    #: Used by the end-to-end tests and the offline demo to point discord.py at a local fake.
    DISCORD_API_BASE: str | None = None
    DISCORD_GATEWAY_URL: str | None = None
    #: Let the bot fetch http:// URLs on loopback addresses (attachments, result videos).
    #: Only for the tests and the offline demo, whose stand-ins listen on 127.0.0.1.
    ALLOW_LOCAL_FETCH: bool = False
    #: Hosts (`host` or `host:port`, comma-separated) besides Discord's CDN that attachments
    #: may come from: a stand-in Discord's CDN. The host of `DISCORD_API_BASE` is added itself.
    ATTACHMENT_HOSTS: str = ""

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("LOG_FORMAT", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

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

    @field_validator("HTTP_LISTEN", "WEBHOOK_LISTEN")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        host, _, port = value.rpartition(":")
        # Port 0 asks the system for a free port (tests, several workers on one host).
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("use HOST:PORT, for example 0.0.0.0:8080")
        return value

    @field_validator(
        "SHARD_COUNT",
        "SHARD_IDS",
        "OPERATOR_DAILY_SPEND",
        "OPERATOR_MONTHLY_SPEND",
        "PRICES_FILE",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`SHARD_COUNT=` in a .env means unset, not an invalid number."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("PRICES_FILE")
    @classmethod
    def _readable_prices(cls, value: Path | None) -> Path | None:
        """Read once here, so a typo stops the start with the other settings' problems."""
        if value is not None:
            from bot.core.controls.prices import PricesFileInvalid, read_prices_file

            try:
                read_prices_file(value)
            except PricesFileInvalid as exc:
                raise ValueError(str(exc).removeprefix(f"PRICES_FILE {value}: ")) from None
        return value

    def operator_cap(self, name: str) -> int | None:
        """An operator cap in micro-dollars (exact: the setting is read as a Decimal)."""
        value: Decimal | None = getattr(self, name)
        return None if value is None else int(value * 1_000_000)

    @model_validator(mode="after")
    def _listen_alias(self) -> Settings:
        """WEBHOOK_LISTEN still works (one listener now serves everything) unless it
        contradicts HTTP_LISTEN: then the operator must pick one."""
        if self.WEBHOOK_LISTEN is None:
            return self
        if "HTTP_LISTEN" in self.model_fields_set and self.HTTP_LISTEN != self.WEBHOOK_LISTEN:
            raise ValueError(
                "WEBHOOK_LISTEN is replaced by HTTP_LISTEN (one listener serves /callback, "
                "/healthz, /readyz and /metrics): remove WEBHOOK_LISTEN"
            )
        self.HTTP_LISTEN = self.WEBHOOK_LISTEN
        return self

    @model_validator(mode="after")
    def _shards(self) -> Settings:
        if self.SHARD_IDS is not None and self.SHARD_COUNT is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (the total number of shards)")
        if self.SHARD_COUNT is not None:
            parse_shard_ids(self.SHARD_IDS, self.SHARD_COUNT)  # raises with a clear message
        return self

    @property
    def http_listen(self) -> tuple[str, int]:
        host, _, port = self.HTTP_LISTEN.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def listen_deprecated(self) -> bool:
        """True when the listener address came from the old WEBHOOK_LISTEN (log a hint)."""
        return self.WEBHOOK_LISTEN is not None

    @property
    def shard_ids(self) -> list[int] | None:
        """The shards this process runs (all of them without SHARD_IDS); None: unsharded."""
        if self.SHARD_COUNT is None:
            return None
        return parse_shard_ids(self.SHARD_IDS, self.SHARD_COUNT)

    def secret_values(self) -> list[str]:
        """What the logs must never show: the tokens and the database password."""
        values = [s.get_secret_value() for s in (self.DISCORD_TOKEN, self.APIMART_API_KEY) if s]
        with contextlib.suppress(ValueError):
            password = urlsplit(self.DATABASE_URL).password
            if password:
                values.append(password)
        return values

    def fetch_policy(self) -> FetchPolicy:
        """Where result downloads may go: any public https host (or loopback, for tests)."""
        return FetchPolicy(allow_local=self.ALLOW_LOCAL_FETCH)

    def attachment_policy(self) -> FetchPolicy:
        """Attachments: Discord's CDN hosts, and the stand-in Discord's when one is configured."""
        extra = {h.strip().lower() for h in self.ATTACHMENT_HOSTS.split(",") if h.strip()}
        if self.DISCORD_API_BASE:
            parts = urlsplit(self.DISCORD_API_BASE)
            if parts.hostname:
                extra.add(f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname)
        return discord_cdn_policy(allow_local=self.ALLOW_LOCAL_FETCH, extra_hosts=frozenset(extra))

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


#: More shard ids than this in one process is a typo, not a plan (Discord: 2,500 guilds each).
MAX_SHARDS_PER_PROCESS = 1024


def parse_shard_ids(text: str | None, count: int) -> list[int]:
    """`0-3`, `0,2,5` or `0-3,8` → sorted unique ids, each below `count`; None → all.

    Raises ValueError naming the problem and the allowed values, so the settings error says
    exactly what to fix.
    """
    if text is None:
        if count > MAX_SHARDS_PER_PROCESS:
            raise ValueError(f"SHARD_COUNT {count} needs SHARD_IDS: this process's share")
        return list(range(count))
    ids: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if not low.strip().isdigit() or (dash and not high.strip().isdigit()):
            raise ValueError(
                f"SHARD_IDS: {part!r} is not a shard id or range; use e.g. 0-3 or 0,2,5"
            )
        first, last = int(low), int(high) if dash else int(low)
        if first > last:
            raise ValueError(f"SHARD_IDS: range {part!r} runs backwards; use e.g. 0-3")
        if last >= count:
            raise ValueError(
                f"SHARD_IDS: shard {last} does not exist with SHARD_COUNT={count} "
                f"(allowed: 0-{count - 1})"
            )
        if last - first + 1 + len(ids) > MAX_SHARDS_PER_PROCESS:
            raise ValueError(f"SHARD_IDS: more than {MAX_SHARDS_PER_PROCESS} shards in one process")
        ids.update(range(first, last + 1))
    return sorted(ids)


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
        if getattr(secrets, name) is None and not any(p.startswith(f"{name}:") for p in problems):
            problems.append(f"{name} is missing: {HOW_TO_FIX.get(name, 'set it')}")
    if problems or settings is None:
        raise SettingsError(problems)
    return settings
