"""Who may re-roll a job, and when: the rules every front end's Re-roll goes through.

A re-roll sends the same request again, with the same image URLs and reference video URL, so
it only works while those live (APIMart keeps uploads `UPLOAD_LIFETIME_S`; a front end's
attachment URL lives about `ATTACHMENT_LIFETIME_S`), only for the member who asked, never for
a job whose first submit may have been billed (`unknown`: re-sending could charge twice), and
once per click: a double click must not submit twice. Refusals are plain text, ready to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.core.catalog import ATTACHMENT_LIFETIME_S, HOUR, UPLOAD_LIFETIME_S
from bot.core.clock import Clock
from bot.core.job import Job, JobState
from bot.core.progress import duration_text

#: A re-roll must start this long before an upload expires (the job still has to be rendered).
UPLOAD_MARGIN_S = 2 * HOUR
#: The same for an attachment URL, whose exact lifetime is not documented.
ATTACHMENT_MARGIN_S = 4 * HOUR
UPLOAD_MAX_AGE = UPLOAD_LIFETIME_S - UPLOAD_MARGIN_S
ATTACHMENT_MAX_AGE = ATTACHMENT_LIFETIME_S - ATTACHMENT_MARGIN_S
#: After a Re-roll click, the same member's further clicks on the same job are refused this long.
REROLL_GUARD_S = 15.0

UNKNOWN_JOB = "That job is no longer known."
ALREADY_REROLLING = "Already re-rolling this one; the new video is on its way."
NOT_REQUESTER = (
    "Only the member who asked for this video can re-roll it. "
    "Use Details to see its parameters and make your own."
)
UNKNOWN_NO_REROLL = (
    "This request was never confirmed by APIMart and may still be billed, so it is not "
    "re-rolled: that could charge twice. Check `/video jobs` later, or start a new one."
)
NEVER_UPLOADED = "This job's images were never uploaded, so it cannot be re-rolled."


def media_time(job: Job) -> float:
    """When the job's images and reference video were handed over (jobs from before this was
    recorded: their creation). A re-roll inherits its source's: it sends the same URLs."""
    return float(job.origin.get("media_at") or job.created_at)


def offers_reroll(job: Job) -> bool:
    """Whether a Re-roll may be offered at all (an `unknown` job may have been billed)."""
    return job.state is not JobState.UNKNOWN and not job.request.pending_uploads


def refusal(job: Job | None, member: str, now: float) -> str | None:
    """Why `member` may not re-roll `job` at `now`, as a sentence; None when they may."""
    if job is None:
        return UNKNOWN_JOB
    if job.requester != member:
        return NOT_REQUESTER
    if job.state is JobState.UNKNOWN:
        return UNKNOWN_NO_REROLL
    request = job.request
    if request.pending_uploads:
        return NEVER_UPLOADED
    again = f"Run `/video {request.spec.family}` again with fresh attachments."
    age = now - media_time(job)
    if request.images and age > UPLOAD_MAX_AGE:
        return (
            f"This job's images were uploaded {duration_text(age)} ago and APIMart "
            f"keeps uploads only {UPLOAD_LIFETIME_S // HOUR} hours, so a re-roll would fail. "
            f"{again}"
        )
    if request.video_url and age > ATTACHMENT_MAX_AGE:
        return (
            f"This job's reference video was attached {duration_text(age)} ago and "
            f"Discord's attachment links expire after about {ATTACHMENT_LIFETIME_S // HOUR} "
            f"hours, so a re-roll would fail. {again}"
        )
    return None


def reroll_key(job_id: int) -> int:
    """The job's key in the shared window table: negative, apart from channel ids."""
    return -job_id


@dataclass(slots=True)
class RerollClaim:
    """One click's hold on (job, member); `release` says whether a re-roll was started."""

    guard: RerollGuard
    key: tuple[int, str]

    def release(self, started: bool) -> None:
        self.guard.release(self, started)


@dataclass(slots=True)
class RerollGuard:
    """The double-click guard, in memory (a restart forgets it, which is harmless).

    `claim` does no I/O, so a front end calls it before its first await and two clicks that
    arrive together cannot both pass. A started re-roll keeps the key for `REROLL_GUARD_S`.
    """

    clock: Clock
    window: float = REROLL_GUARD_S
    _running: set[tuple[int, str]] = field(default_factory=set)
    _started: dict[tuple[int, str], float] = field(default_factory=dict)

    def claim(self, job_id: int, member: str) -> RerollClaim | None:
        """The claim for this click, or None when the member is already re-rolling this job."""
        now = self.clock.now()
        key = (job_id, member)
        self._started = {k: t for k, t in self._started.items() if now - t < self.window}
        if key in self._running or key in self._started:
            return None
        self._running.add(key)
        self._started[key] = now
        return RerollClaim(self, key)

    def release(self, claim: RerollClaim, started: bool) -> None:
        self._running.discard(claim.key)
        if not started:
            self._started.pop(claim.key, None)
