"""Logging set-up shared by every entry point: one line per event, secrets kept out.

Logs go to stderr, where Docker (`docker logs`) and systemd (journald) already keep and rotate
them. For a plain process, `LOG_FILE` also writes them to a file, rotated by size
(`RotatingFileHandler`), so a long-running bot cannot fill the disk.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.core.config import Settings

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(
    level: str,
    *,
    stream: Any = None,
    log_file: Path | str | None = None,
    max_mb: int = 10,
    backups: int = 5,
    file_level: str | None = None,
) -> None:
    """One line per event, to stderr (and `log_file`); tokens never reach a log record.

    `file_level` lets the terminal keep stderr quiet (warnings only, under its progress bar)
    while the file still gets the configured level.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    handlers[0].setLevel(level)
    root_level = logging.getLevelName(level)
    if log_file is not None:
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_mb * 1024 * 1024, backupCount=backups, encoding="utf-8"
        )
        to_file.setLevel(file_level or level)
        handlers.append(to_file)
        root_level = min(root_level, logging.getLevelName(file_level or level))
    logging.basicConfig(level=root_level, format=FORMAT, handlers=handlers)
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


def setup_logging_from(settings: Settings, *, stderr_level: str | None = None) -> None:
    """`setup_logging` with the settings' LOG_LEVEL and LOG_FILE (every entry point uses it)."""
    setup_logging(
        stderr_level or settings.LOG_LEVEL,
        log_file=settings.LOG_FILE,
        max_mb=settings.LOG_FILE_MAX_MB,
        backups=settings.LOG_FILE_BACKUPS,
        file_level=settings.LOG_LEVEL,
    )
