"""Logging set-up shared by every entry point: one line per event, secrets kept out.

`LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message, and the
traceback as `exc_info` text) for log shippers (Loki, Vector, CloudWatch…) that would
otherwise split a traceback into many events. Both formats pass through the same redaction,
so a secret that slipped into a message (an API error echoing the key, say) is replaced by
`[redacted]` before any handler writes it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REDACTED = "[redacted]"
#: Secrets shorter than this are not redacted: replacing "a" everywhere would garble the log.
MIN_SECRET = 8


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
) -> None:
    """One line per event, to stderr; the API key and Discord token never reach a log record."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    logging.basicConfig(level=level, handlers=[handler])
    # At DEBUG, discord.py logs request URLs and gateway payloads, and those carry interaction
    # tokens (webhook URLs `/webhooks/{app}/{token}`, `/interactions/{id}/{token}/callback`,
    # the `token` of every INTERACTION_CREATE): these loggers never go below INFO.
    floor = max(logging.INFO, logging.getLevelName(level))
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
