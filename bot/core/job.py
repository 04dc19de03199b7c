"""A job: one request, where it stands, and what came of it.

A job moves (queued →) created → submitting → running → completed / failed / cancelled. `unknown` is the
honest state of a submit whose answer never came (timeout, 5xx): the API may or may not have
accepted and billed it, so it is reported and never resubmitted. `delivered` records that the
final outcome reached its requester, so a restart posts every result exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.core.request import VideoRequest

#: The most a single video can plausibly cost (money or credits). A larger figure (1e300), a
#: negative one or NaN is a broken answer: shown as unknown, never as money.
MAX_PLAUSIBLE_COST = 1_000_000.0
#: Unix times past this (the year 2200) are broken answers, not dates.
MAX_PLAUSIBLE_TIME = 7_258_118_400.0
#: No video task runs (or is estimated to run) longer than this (seconds); an API answer
#: saying so (1e300, a negative time) is a broken answer, not a duration to print.
MAX_PLAUSIBLE_DURATION = 30 * 86_400.0


def plausible_money(value: float | None) -> float | None:
    """`value` when it can be a real cost, else None (unknown)."""
    if value is None or not math.isfinite(value) or not 0 <= value <= MAX_PLAUSIBLE_COST:
        return None
    return value


def plausible_duration(value: float | None) -> float | None:
    """`value` when it can be how long a task ran or will run, else None (unknown)."""
    if value is None or not math.isfinite(value) or not 0 <= value <= MAX_PLAUSIBLE_DURATION:
        return None
    return value


def plausible_time(value: float | None) -> float | None:
    """`value` when it can be a real unix time, else None (unknown)."""
    if value is None or not math.isfinite(value) or not 0 < value <= MAX_PLAUSIBLE_TIME:
        return None
    return value


#: What a job's `notice` means, in words any front end may show.
NOTICES = {
    "slow": "taking longer than usual",
    "delayed": "delayed: APIMart is not answering about it right now; still following it",
}


class JobState(StrEnum):
    #: Admitted, waiting for a free slot (a concurrency limit); submitted by the fair queue.
    QUEUED = "queued"
    CREATED = "created"
    SUBMITTING = "submitting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN})


@dataclass(slots=True)
class Job:
    """The store's row as a Python object; the store is the truth, this is a cached copy."""

    id: int
    state: JobState
    request: VideoRequest
    created_at: float
    origin: dict[str, Any] = field(default_factory=dict)
    requester: str | None = None
    guild_id: str | None = None
    task_id: str | None = None
    progress: int = 0
    estimated_time: float | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    #: How long the task ran at APIMart (its `actual_time`), when known.
    run_seconds: float | None = None
    cost: float | None = None
    credits_cost: float | None = None
    video_urls: list[str] = field(default_factory=list)
    expires_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    delivered: bool = False
    #: The admission's cost estimate in micro-dollars (None: no price known yet).
    estimate: int | None = None
    #: Micro-dollars held against the caps until the job ends (then its actual cost counts).
    reserved: int = 0
    #: Queued, but the front end is still preparing it (not yet eligible for submission).
    held: bool = False
    #: Its place in the server's queue when last counted (not stored: it changes as the
    #: queue moves; front ends show it on the status message).
    queue_position: int | None = None
    #: A neutral word for the requester while the job runs ("delayed", "slow"), not stored:
    #: front ends render it (see NOTICES); None when all is as expected.
    notice: str | None = None
    #: The worker holding this job's lease (None: nobody), and the fencing token of that
    #: claim. Every write of the job is conditional on both (`Store.update`): a worker whose
    #: lease was taken over writes nothing.
    owner: str | None = None
    fence: int = 0
    #: Until when `owner` holds it (epoch seconds; renewed while the owner lives).
    lease_until: float | None = None
    #: When the job is next due for a poll, as its last holder left it (None: at once).
    next_poll_at: float | None = None

    @property
    def elapsed(self) -> float | None:
        """Seconds the video took: the API's own figure, else submit to end by our clock."""
        if self.run_seconds is not None:
            return self.run_seconds
        start = self.submitted_at or self.created_at
        return None if self.finished_at is None else max(0.0, self.finished_at - start)

    @property
    def charged(self) -> bool | None:
        """False when the API reported a zero cost (failed tasks are refunded)."""
        if self.cost is None and self.credits_cost is None:
            return None
        return bool(self.cost or self.credits_cost)

    def outcome(self) -> dict[str, Any]:
        """The result as the CLI's `--json` prints it (and as any front end may show it)."""
        return outcome_record(
            task_id=self.task_id,
            status=self.state.value,
            video_urls=self.video_urls,
            expires_at=self.expires_at,
            cost=self.cost,
            credits_cost=self.credits_cost,
            elapsed_s=None if self.elapsed is None else round(self.elapsed, 1),
            error=self.error_message,
        )


def outcome_record(
    *,
    status: str,
    task_id: str | None = None,
    video_urls: list[str] | tuple[str, ...] = (),
    expires_at: float | None = None,
    cost: float | None = None,
    credits_cost: float | None = None,
    elapsed_s: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The one shape of `reelbot generate --json`, also for a request refused before a job."""
    return {
        "task_id": task_id,
        "status": status,
        "video_urls": list(video_urls),
        "expires_at": expires_at,
        "cost": cost,
        "credits_cost": credits_cost,
        "elapsed_s": elapsed_s,
        "error": error,
    }
