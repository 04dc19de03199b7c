"""Who follows a job right now, so two processes never settle the same one.

The bot workers and `reelbot generate` / `reelbot status` share one database. Whoever follows
a job holds its lease (bot/core/leases.py: `owner`, `lease_until`, renewed while the process
lives); a job leased to another live process is not ours to settle, follow or report. A
terminal's job also records where it runs (`terminal_origin`), for the operator's eyes.

(Before leases this was a heartbeat and a pid in the job's `origin`; the lease is the same
idea for every process, on every machine, with fencing.)
"""

from __future__ import annotations

import os
import socket
from typing import Any

from bot.core.job import Job

#: The origin kind of a job started from the terminal (`reelbot generate`).
TERMINAL = "cli"


def terminal_origin(now: float) -> dict[str, Any]:
    """The origin fields of a job this process (a terminal) starts and follows."""
    del now  # the lease says whether it is still followed
    return {"kind": TERMINAL, "host": socket.gethostname(), "pid": os.getpid()}


def owned_elsewhere(job: Job, now: float, me: str | None = None) -> bool:
    """True when another process (not `me`) holds the job's lease right now."""
    return (
        job.owner is not None
        and job.owner != me
        and job.lease_until is not None
        and job.lease_until > now
    )
