"""Logging set-up shared by every entry point: one line per event, secrets kept out.

`LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message, and the
traceback as `exc_info` text) for log shippers (Loki, Vector, CloudWatch…) that would
otherwise split a traceback into many events. Both formats pass through the same redaction,
so a secret that slipped into a message (an API error echoing the key, say) is replaced by
`[redacted]` before any handler writes it.

Logs go to stderr, where Docker (`docker logs`) and systemd (journald) already keep and rotate
them. For a plain process, `LOG_FILE` also writes them to a file, rotated by size
(`RotatingFileHandler`), so a long-running bot cannot fill the disk.

No line is written in a tight loop: `RepeatFilter` lets the same message (same logger, same
template) through a few times per window and then counts it, so a flood (asyncio's accept
errors when file descriptors run out, a poll failing every second) costs a line per window
with a count, not hundreds of megabytes of log.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.core.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REDACTED = "[redacted]"
#: Secrets shorter than this are not redacted: replacing "a" everywhere would garble the log.
MIN_SECRET = 8
#: The same message is written at most `REPEAT_BURST` times per `REPEAT_WINDOW` seconds.
REPEAT_BURST = 5
REPEAT_WINDOW = 60.0
#: Distinct messages remembered at once (older ones are forgotten).
REPEAT_KEYS = 1024


class RepeatFilter(logging.Filter):
    """Drops repeats of a message beyond a burst per window; the next one says how many."""

    def __init__(
        self,
        burst: int = REPEAT_BURST,
        window: float = REPEAT_WINDOW,
        clock: Any = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        #: key → [window start, lines written in it, lines suppressed]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window:
            suppressed = int(entry[2]) if entry is not None else 0
            if len(self._seen) >= REPEAT_KEYS:
                self._seen.clear()
            self._seen[key] = [now, 1.0, 0.0]
            if suppressed:
                record.msg = f"{record.msg} ({suppressed} similar lines suppressed)"
            return True
        if entry[1] < self.burst:
            entry[1] += 1
            return True
        entry[2] += 1
        return False


class Redactor:
    """Replaces known secret values (the API key, the bot token, a DB password) in text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len)[::-1]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class TextFormatter(logging.Formatter):
    """The classic one-line text format, redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback stays inside its event (`exc_info`)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        if record.exc_info:
            event["exc_info"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            event["exc_info"] = self.redact(record.exc_text)
        if record.stack_info:
            event["stack_info"] = self.redact(self.formatStack(record.stack_info))
        # ensure_ascii: a control character or odd byte in a message never breaks the line.
        return json.dumps(event, ensure_ascii=True, default=str)


def setup_logging(
    level: str,
    *,
    stream: Any = None,
    fmt: str = "text",
    secrets: Iterable[str | None] = (),
    log_file: Path | str | None = None,
    max_mb: int = 10,
    backups: int = 5,
    file_level: str | None = None,
) -> None:
    """One line per event, to stderr (and `log_file`); tokens never reach a log record.

    `file_level` lets the terminal keep stderr quiet (warnings only, under its progress bar)
    while the file still gets the configured level.
    """
    redact = Redactor(secrets)
    formatter = JsonFormatter(redact) if fmt == "json" else TextFormatter(redact)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.setLevel(level)
    handler.addFilter(RepeatFilter())
    handlers: list[logging.Handler] = [handler]
    root_level = logging.getLevelName(level)
    if log_file is not None:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_mb * 1024 * 1024, backupCount=backups, encoding="utf-8"
        )
        to_file.setFormatter(formatter)
        to_file.setLevel(file_level or level)
        handlers.append(to_file)
        root_level = min(root_level, logging.getLevelName(file_level or level))
    logging.basicConfig(level=root_level, handlers=handlers)
    # At DEBUG, discord.py logs request URLs and gateway payloads, and those carry interaction
    # tokens (webhook URLs `/webhooks/{app}/{token}`, `/interactions/{id}/{token}/callback`,
    # the `token` of every INTERACTION_CREATE): these loggers never go below INFO.
    floor = max(logging.INFO, root_level)
    for name in (
        "discord.http",
        "discord.gateway",
        "discord.webhook.async_",
        "discord.webhook.sync",
    ):
        logging.getLogger(name).setLevel(floor)
    # aiohttp's server logs every malformed request it meets; a scanner or a slowloris would
    # turn that into a log flood. The listener counts them in /metrics instead.
    logging.getLogger("aiohttp.server").setLevel(max(logging.ERROR, logging.getLevelName(level)))


def setup_logging_from(settings: Settings, *, stderr_level: str | None = None) -> None:
    """`setup_logging` from the settings: level, format, secrets to redact, LOG_FILE."""
    setup_logging(
        stderr_level or settings.LOG_LEVEL,
        fmt=settings.LOG_FORMAT,
        secrets=settings.secret_values(),
        log_file=settings.LOG_FILE,
        max_mb=settings.LOG_FILE_MAX_MB,
        backups=settings.LOG_FILE_BACKUPS,
        file_level=settings.LOG_LEVEL,
    )
