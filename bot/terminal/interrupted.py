"""What `generate` says when Ctrl-C (or SIGTERM) comes before any job existed.

Kept free of heavy imports on purpose: it runs while an interrupted import of pydantic or
SQLAlchemy is still unwinding, and importing those again there fails half-way.
"""

from __future__ import annotations

import json
import sys

#: The keys of `bot.core.job.outcome_record`, the one shape of `generate --json` (a test keeps
#: them equal).
OUTCOME_KEYS = (
    "task_id",
    "status",
    "video_urls",
    "expires_at",
    "cost",
    "credits_cost",
    "elapsed_s",
    "error",
)
NOTHING_SENT = "interrupted before anything was sent to APIMart; nothing was charged."


def report_interrupted_before_start(*, as_json: bool) -> None:
    """Say that nothing was sent, and keep `--json`'s promise of exactly one object."""
    if as_json:
        outcome: dict[str, object] = dict.fromkeys(OUTCOME_KEYS)
        outcome.update(status="interrupted", video_urls=[], error=NOTHING_SENT)
        print(json.dumps(outcome))
    print(f"interrupted: {NOTHING_SENT}", file=sys.stderr)
