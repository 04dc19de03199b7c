"""Logging set-up shared by every entry point: one line per event, secrets kept out."""

from __future__ import annotations

import logging
import sys
from typing import Any


def setup_logging(level: str, *, stream: Any = None) -> None:
    """One line per event, to stderr; the API key and Discord token never reach a log record."""
    logging.basicConfig(
        level=level,
        stream=stream or sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
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
