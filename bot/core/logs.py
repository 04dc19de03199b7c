"""Logging set-up shared by every entry point: one line per event, secrets kept out.

No line is written in a tight loop: `RepeatFilter` lets the same message (same logger, same
template) through a few times per window and then counts it, so a flood (asyncio's accept
errors when file descriptors run out, a webhook under attack, a poll failing every second)
costs a line per window with a count, not hundreds of megabytes of log.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

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


def setup_logging(level: str, *, stream: Any = None) -> None:
    """One line per event, to stderr; the API key and Discord token never reach a log record."""
    logging.basicConfig(
        level=level,
        stream=stream or sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(RepeatFilter())
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
