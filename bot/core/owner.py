"""Who follows a job right now, so two processes never settle the same one.

The bot and `reelbot generate` share one database. A job the terminal started is followed by
that terminal process; a bot starting meanwhile must not close it as `unknown` (or follow it
too). The terminal records itself in the job's `origin` (kind "cli", host, pid) and
refreshes a heartbeat while it follows the job; `JobService.resume` skips a job whose owner is
alive and whose heartbeat is fresh. (Several bot workers will use leases in the store; this
covers the one case that exists today: one bot plus terminals on the same machine.)
"""

from __future__ import annotations

import os
import socket
from typing import Any

from bot.core.job import Job

#: The terminal refreshes its heartbeat this often (seconds) while it follows a job.
HEARTBEAT_EVERY = 10.0
#: A heartbeat older than this (seconds) means the owner is gone, whatever its pid says.
HEARTBEAT_STALE = 60.0
#: The origin kind of a job started from the terminal (`reelbot generate`).
TERMINAL = "cli"


def terminal_origin(now: float) -> dict[str, Any]:
    """The origin fields of a job this process (a terminal) starts and follows."""
    return {"kind": TERMINAL, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": now}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists but not ours (or not checkable): assume alive until stale
    return True


def owned_elsewhere(job: Job, now: float) -> bool:
    """True when another live process (a terminal) is following this job right now."""
    origin = job.origin
    if origin.get("kind") != TERMINAL:
        return False
    heartbeat = origin.get("heartbeat")
    if not isinstance(heartbeat, int | float) or now - heartbeat > HEARTBEAT_STALE:
        return False
    pid = origin.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    if origin.get("host") != socket.gethostname():
        return True  # another machine: the fresh heartbeat is all we can know
    return _alive(pid)
