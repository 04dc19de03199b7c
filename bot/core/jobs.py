"""The job pipeline: persist, upload, submit, hand over to the poller — never twice.

Every front end (the CLI, the Discord cogs, a re-roll button) goes through `JobService`. The
order is what makes it safe: the job is written to the store before anything is sent, marked
`submitting` before the one submit call, and moved to `running` / `failed` / `unknown` from
what that call proved. A submit whose answer was lost is `unknown` and is never repeated:
there is no idempotency key, so a second submit would be a second charge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bot.core.apimart import (
    ApimartError,
    ApiUnreachable,
    AuthenticationFailed,
    PaymentRequired,
    ProtocolError,
    RateLimited,
    ServerError,
    SubmitOutcomeUnknown,
    UploadedImage,
)
from bot.core.clock import Clock
from bot.core.controls import queue
from bot.core.controls.admission import Admission, Requester
from bot.core.controls.service import Controls
from bot.core.images import sniff_image_type
from bot.core.job import Job, JobState
from bot.core.owner import owned_elsewhere
from bot.core.poller import Notifier, Poller
from bot.core.request import (
    PENDING_PREFIX,
    RequestInvalid,
    VideoRequest,
    check_image_file,
)
from bot.core.reroll import UNKNOWN_JOB, RerollGuard, refusal, reroll_key
from bot.core.send_window import SharedWindow
from bot.core.store import LeaseLost, Store

if TYPE_CHECKING:
    from bot.core.leases import Leases

log = logging.getLogger(__name__)

#: Queued jobs whose status message is updated when their server's queue moves.
SHOWN_PLACES = 25

UNKNOWN_SUFFIX = (
    " The video may still be made and billed; it was not sent again to avoid a double charge."
)
UNKNOWN_AFTER_RESTART = "reelbot stopped while sending this job to APIMart." + UNKNOWN_SUFFIX
BALANCE_EMPTY = (
    "The server's APIMart balance is empty (or too low for this video), so nothing was made "
    "or charged. The bot's operator has been alerted; please try again once it is topped up."
)
INTERRUPTED_MESSAGE = "reelbot stopped before this job was sent to APIMart. Nothing was charged."
#: Writing the task id after a billed submit is retried after these pauses (seconds).
RECORD_RETRY_DELAYS = (0.2, 1.0, 3.0)


@dataclass(frozen=True, slots=True)
class ImageFile:
    """An image the user gave as bytes (a local file, a Discord attachment), to be uploaded."""

    data: bytes
    filename: str
    content_type: str


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a job came from and where its messages go: the shape of the job's `origin` column.

    Front ends pass values; the core decides the shape, and the notifier of that front end
    reads it back. Ids are strings (Discord snowflakes exceed a JSON double).
    """

    #: Which front end: `discord`, `cli`.
    kind: str
    channel_id: str | None = None
    #: The status message to edit as the job runs.
    message_id: str | None = None
    requester_id: str | None = None
    guild_id: str | None = None
    #: The per-file size the result may have where it is posted (bytes).
    upload_limit: int | None = None
    #: When the request's images and reference video were handed over (a re-roll: its
    #: source's, since it sends the same URLs); the re-roll rules measure their age from it.
    media_at: float | None = None
    #: A terminal's job: which process follows it, and when it last said so (`bot.core.owner`).
    host: str | None = None
    pid: int | None = None
    heartbeat: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The stored form (unset fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class VideoApi(Protocol):
    async def submit(self, payload: dict[str, Any]) -> str: ...

    async def upload_image(
        self, data: bytes, filename: str, content_type: str
    ) -> UploadedImage: ...


def with_pending_uploads(
    images: Sequence[str | ImageFile],
) -> tuple[tuple[str, ...], list[ImageFile]]:
    """Split user images into the request's refs (URLs or placeholders) and the files to upload."""
    refs: list[str] = []
    files: list[ImageFile] = []
    for image in images:
        if isinstance(image, ImageFile):
            refs.append(f"{PENDING_PREFIX}{len(files)}:{image.filename}")
            files.append(image)
        else:
            refs.append(image)
    return tuple(refs), files


class JobService:
    """Creates jobs and launches them; the poller takes over once a task id exists."""

    def __init__(
        self,
        *,
        store: Store,
        api: VideoApi,
        poller: Poller,
        notifier: Notifier,
        clock: Clock,
        webhook_url: str | None = None,
        controls: Controls | None = None,
    ) -> None:
        self.controls = controls
        self.store = store
        self.api = api
        self.poller = poller
        self.notifier = notifier
        self.clock = clock
        self.webhook_url = webhook_url
        self.rerolls = RerollGuard(clock)
        #: The same guard across workers (PostgreSQL): one re-roll per job per guard window,
        #: whichever worker each click reached. None: one process, the local guard is enough.
        self.shared_rerolls: SharedWindow | None = None
        self._reroll_holds: dict[int, float] = {}
        #: This worker's leases (several processes on one database): a job created here is
        #: leased to this worker from its first row on. None: the only process.
        self.leases: Leases | None = None
        #: Submits sent and not yet recorded; a graceful stop waits for them (`drain`).
        self._sending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    async def drain(self, timeout: float) -> bool:
        """Refuse new submits and wait (at most `timeout`) for those already sent.

        A submit under way may already be billed: stopping before its answer is recorded would
        lose the task id. Returns False when some were still under way at the deadline.
        The fair queue stops first (its launches under way finish): a queued job stays queued
        for the next start instead of being refused as interrupted.
        """
        if self.controls is not None and self.controls.dispatcher is not None:
            await self.controls.dispatcher.stop()
        self._closing = True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("stopping with %d submit(s) still unanswered", self._sending)
            return False
        return True

    @staticmethod
    def check_files(request: VideoRequest, files: Sequence[ImageFile]) -> list[ImageFile]:
        """Refuse files of the wrong type or size before anything is stored or sent.

        The type checked is the one the bytes show (`sniff_image_type`), never the name's or
        the sender's claim, on every front end. Returns the files labelled with that type.
        """
        if len(files) != len(request.pending_uploads):
            raise ValueError("one ImageFile is needed per pending image")
        spec = request.spec
        checked = []
        for index, file in zip(request.pending_uploads, files, strict=True):
            field = f"image {index + 1} ({file.filename})"
            real = sniff_image_type(file.data)
            check_image_file(spec, real, len(file.data), field)
            checked.append(ImageFile(file.data, file.filename, real or file.content_type))
        return checked

    async def admit(
        self,
        request: VideoRequest,
        *,
        origin: Origin | None = None,
        requester: str | None = None,
        guild_id: str | None = None,
        role_ids: tuple[str, ...] = (),
    ) -> Admission:
        """Write the job down — the first thing, before any slow work — once the community
        controls admit it (raises `Refused`); it is `queued` when only a slot is missing."""
        if self.controls is None:
            # With leases the row is born leased to this worker, so no other worker (nor a bot
            # starting beside `reelbot generate`) settles it while it is being submitted here.
            job = await self.store.create(
                request,
                now=self.clock.now(),
                origin=origin.as_dict() if origin is not None else None,
                requester=requester,
                guild_id=guild_id,
                owner=self.leases.worker_id if self.leases is not None else None,
                lease_until=self.leases.until() if self.leases is not None else None,
            )
            if self.leases is not None:
                self.leases.hold(job)
            admission = Admission(job)
        else:
            who = Requester(guild_id, requester, role_ids)
            stored = origin.as_dict() if origin is not None else None
            admission = await self.controls.admit(request, who, origin=stored)
        log.info("job %s: %s (%s)", admission.job.id, admission.job.state.value, request.summary())
        return admission

    async def create(
        self,
        request: VideoRequest,
        *,
        origin: Origin | None = None,
        requester: str | None = None,
        guild_id: str | None = None,
    ) -> Job:
        """`admit` for callers that need only the job."""
        admission = await self.admit(request, origin=origin, requester=requester, guild_id=guild_id)
        return admission.job

    async def place(self, job: Job, origin: Origin) -> Job:
        """Record where the job's messages go, once the front end has shown its status."""
        return await self.store.update(job, origin=origin.as_dict())

    async def get(self, job_id: int) -> Job | None:
        return await self.store.get(job_id)

    async def recent(self, *, requester: str, limit: int = 10) -> list[Job]:
        """A member's latest jobs, newest first (`/video jobs`)."""
        return await self.store.recent(requester=requester, limit=limit)

    async def reroll_source(self, job_id: int, member: str) -> Job | str:
        """The job `member` may re-roll now, or the sentence saying why not.

        Call it holding a claim from `self.rerolls` (taken before the front end's first await).
        """
        job = await self.store.get(job_id)
        why = refusal(job, member, self.clock.now())
        if why is not None or job is None:
            return why or UNKNOWN_JOB
        return job

    async def hold_reroll(self, job_id: int) -> bool:
        """Take the job's re-roll hold across workers; False if another worker holds it.

        Two clicks of one Re-roll button can reach two workers (each replica receives every
        interaction, and the claim gives each click to either): the local guard cannot see
        the other's, the database can. Only the requester gets this far, so the key is the
        job. Database errors propagate (the front end's error ladder answers the member).
        """
        if self.shared_rerolls is None:
            return True
        taken_at = await self.shared_rerolls.take_at(reroll_key(job_id))
        if taken_at is None:
            return False
        self._reroll_holds[job_id] = taken_at
        return True

    async def release_reroll(self, job_id: int, *, started: bool) -> None:
        """Done with the hold: a started re-roll keeps it for the guard window, one that did
        not start gives it back so that the member may try again at once."""
        taken_at = self._reroll_holds.pop(job_id, None)
        if started or taken_at is None or self.shared_rerolls is None:
            return
        try:
            await self.shared_rerolls.give_back(reroll_key(job_id), taken_at)
        except Exception:  # it lapses after the guard window anyway
            log.warning("job %s: could not give back its re-roll hold", job_id, exc_info=True)

    async def launch(self, job: Job, files: Sequence[ImageFile] = ()) -> Job:
        """Upload the job's files, submit it once, and hand it to the poller or the notifier.

        Every write is conditional on this worker's lease: if it was lost before the submit
        (this process stalled for a whole lease), nothing is sent.
        """
        try:
            return await self._launch(job, files)
        except LeaseLost:
            log.error(
                "job %s: its lease was lost while launching it; left to its new owner", job.id
            )
            self.poller.forget(job.id)
            return job

    async def _launch(self, job: Job, files: Sequence[ImageFile]) -> Job:
        try:
            files = self.check_files(job.request, files)
        except RequestInvalid as exc:
            return await self.end(job, JobState.FAILED, "invalid_file", str(exc))
        try:
            request = await self._upload(job, files)
        except ApimartError as exc:
            message = f"The image upload failed: {exc}"
            return await self.end(job, JobState.FAILED, "upload_failed", message)
        except Exception as exc:
            # Unclassified (aiohttp refusing a header, a bug): still an end, said once; no
            # submit was made, so nothing was charged. Never a job left half-way.
            log.exception("job %s: the image upload failed unexpectedly", job.id)
            message = f"The image upload failed (reelbot error: {type(exc).__name__})."
            return await self.end(job, JobState.FAILED, "upload_failed", message)
        if job.state is JobState.QUEUED:
            # Ready: the fair queue submits it when a slot frees (bot.core.controls.queue).
            await self.store.update(job, held=False)
            if self.leases is not None:
                # Whichever worker's queue takes it leases it then; until then nobody needs to.
                await self.leases.release([(job, None)])
            if self.controls is not None and self.controls.dispatcher is not None:
                self.controls.dispatcher.wake()
            return job
        if self._closing:
            return await self.end(job, JobState.FAILED, "interrupted", INTERRUPTED_MESSAGE)
        self._sending += 1
        self._idle.clear()
        try:
            return await self._send(job, request)
        finally:
            self._sending -= 1
            if not self._sending:
                self._idle.set()

    async def _send(self, job: Job, request: VideoRequest) -> Job:
        """The one submit, and recording what it proved (counted by `drain`)."""
        await self.store.update(job, state=JobState.SUBMITTING)
        payload = request.to_payload()
        if self.webhook_url:
            payload["webhook"] = self.webhook_url
        try:
            task_id = await self.api.submit(payload)
        except SubmitOutcomeUnknown as exc:
            log.warning("job %s: submit outcome unknown: %s", job.id, exc)
            return await self.end(job, JobState.UNKNOWN, "submit_unknown", _unknown_message(exc))
        except ApimartError as exc:
            if isinstance(exc, PaymentRequired | AuthenticationFailed):
                log.error("job %s: operator action needed: %s", job.id, exc)
            return await self.end(job, JobState.FAILED, _error_code(exc), refusal_message(exc))
        except Exception as exc:
            # Unclassified: it may have left the process, so it is never resent, and the job
            # ends `unknown` (it used to stay `submitting`, and `generate` waited forever).
            log.exception("job %s: submit failed unexpectedly", job.id)
            why = f"reelbot met an unexpected error ({type(exc).__name__}) while sending this job."
            return await self.end(job, JobState.UNKNOWN, "submit_unknown", why + UNKNOWN_SUFFIX)
        # Billed from here on: the id goes to the log at once, whatever the store does next.
        log.info("job %s: APIMart accepted it as task %s", job.id, task_id)
        if not await self._record_submitted(job, task_id):
            job.task_id = task_id
            message = (
                f"APIMart accepted this job as task {task_id}, but reelbot could not record "
                "that (database error), so it is not followed. The video may still be made "
                f"and billed; `reelbot status {task_id}` looks it up."
            )
            return await self.end(job, JobState.UNKNOWN, "task_id_unrecorded", message)
        self.poller.track(job)
        try:
            await self.notifier.job_progress(job)
        except Exception:
            log.exception("job %s: could not show the submitted status", job.id)
        return job

    async def _record_submitted(self, job: Job, task_id: str) -> bool:
        """Write the task id (bounded retries: a locked SQLite file, a restarting PostgreSQL)."""
        for attempt, pause in enumerate((*RECORD_RETRY_DELAYS, None), start=1):
            try:
                await self.store.update(
                    job, state=JobState.RUNNING, task_id=task_id, submitted_at=self.clock.now()
                )
                return True
            except LeaseLost:
                # Its new owner settles it as `unknown` (the submit may have been billed); the
                # task id is in the log line above for the operator.
                raise
            except Exception as exc:
                log.error(
                    "job %s: recording task %s failed (attempt %d): %s",
                    job.id,
                    task_id,
                    attempt,
                    type(exc).__name__,
                )
                if pause is None:
                    return False
                await self.clock.sleep(pause)
        return False

    async def submit(
        self,
        request: VideoRequest,
        files: Sequence[ImageFile] = (),
        *,
        origin: Origin | None = None,
        requester: str | None = None,
        guild_id: str | None = None,
    ) -> Job:
        """`create` + `launch` for front ends with nothing to show in between (the CLI)."""
        self.check_files(request, files)
        job = await self.create(request, origin=origin, requester=requester, guild_id=guild_id)
        return await self.launch(job, files)

    async def resume(self) -> dict[str, int]:
        """At startup, one process without leases (tests, benchmarks): take over every
        unfinished job nobody else holds, and follow again the `unknown` ones with a task."""
        counts = {
            "polling": 0,
            "interrupted": 0,
            "unknown": 0,
            "redelivered": 0,
            "owned elsewhere": 0,
            "followed again": 0,
            "queued": 0,
        }
        now = self.clock.now()
        for job in await self.store.unfinished():
            if owned_elsewhere(job, now):
                # Leased by a live process (a terminal following it): not ours to touch.
                counts["owned elsewhere"] += 1
                continue
            if job.state is JobState.QUEUED and not job.held:
                counts["queued"] += 1  # the queue submits it when its turn comes
                continue
            counts[await self.take_over(job)] += 1
        for job in await self.store.unknown_with_task(since=now - self.poller.max_age):
            if not owned_elsewhere(job, now) and job.id not in self.poller:
                await self.follow_again(job)
                counts["followed again"] += 1
        if any(counts.values()):
            log.info("resumed jobs: %s", counts)
        if self.controls is not None and self.controls.dispatcher is not None:
            self.controls.dispatcher.open()  # queued jobs may go now
        return counts

    async def take_over(self, job: Job) -> str:
        """Carry on with a job this process did not start (a restart, a dead worker's lease).

        Running → follow it (first poll when it was due); created → it was never sent, say
        so; submitting → the submit may have reached APIMart: say so, never resend; finished
        → deliver it. Returns which of these it was.
        """
        if job.state is JobState.RUNNING:
            # When its last holder meant to look again (released cleanly), else at once: what
            # happened since the last poll is unknown, and its requester has waited a lease.
            due = job.next_poll_at if job.next_poll_at is not None else self.clock.now()
            self.poller.track(job, due=due)
            return "polling"
        if job.state is JobState.CREATED or job.state is JobState.QUEUED:
            # Never sent (a queued one: its front end was still preparing it).
            await self.end(job, JobState.FAILED, "interrupted", INTERRUPTED_MESSAGE, later=True)
            return "interrupted"
        if job.state is JobState.SUBMITTING:
            await self.end(
                job, JobState.UNKNOWN, "submit_unknown", UNKNOWN_AFTER_RESTART, later=True
            )
            return "unknown"
        self.poller.spawn(self.poller.deliver(job))
        return "redelivered"

    async def show_queue(self, guild_id: str) -> None:
        """The queue of a server moved: each waiting job's status shows its new place (the
        notifier throttles; the first `SHOWN_PLACES` are enough to see it move)."""
        for job in await queue.waiting(self.store, guild_id, SHOWN_PLACES):
            await self.notifier.job_progress(job)

    async def follow_again(self, job: Job, *, track: bool = True) -> Job:
        """Follow an `unknown` job that has a task id again (its end was never learned).

        `track=False` only marks it running, for whoever starts next to follow it.
        """
        assert job.task_id is not None
        await self.store.update(
            job,
            state=JobState.RUNNING,
            finished_at=None,
            error_code=None,
            error_message=None,
            delivered=False,
        )
        log.info("job %s: following task %s again", job.id, job.task_id)
        if track:
            self.poller.track(job, started=job.submitted_at or job.created_at)
        return job

    async def _upload(self, job: Job, files: Sequence[ImageFile]) -> VideoRequest:
        request = job.request
        if not files:
            return request
        images = list(request.images)
        for index, file in zip(request.pending_uploads, files, strict=True):
            uploaded = await self.api.upload_image(file.data, file.filename, file.content_type)
            images[index] = uploaded.url
            log.info("job %s: uploaded %s (%d bytes)", job.id, file.filename, len(file.data))
        request = request.model_copy(update={"images": tuple(images)})
        await self.store.replace_request(job, request)
        return request

    async def end(
        self, job: Job, state: JobState, code: str, message: str, *, later: bool = False
    ) -> Job:
        """Close a job that never got (or may have got) a task at APIMart, and say so once.

        A `failed` job here was never accepted, so it cost nothing; an `unknown` one may have
        been, so its cost stays unknown. `later=True` delivers in the background (at startup,
        before Discord is connected).
        """
        log.info("job %s: %s before polling: %s", job.id, state.value, message)
        fields: dict[str, Any] = {
            "state": state,
            "finished_at": self.clock.now(),
            "error_code": code,
            "error_message": message,
        }
        if state is JobState.FAILED:
            fields["cost"] = 0.0
        if job.task_id is not None:
            fields["task_id"] = job.task_id
        try:
            await self.store.update(job, **fields)
        except LeaseLost:
            raise  # another worker holds the job: it says what is to be said, once
        except Exception:
            # Say it anyway: the requester (the CLI's output) is the last place it can go.
            log.exception("job %s: its end could not be stored; reporting it anyway", job.id)
            for name, value in fields.items():
                setattr(job, name, value)
        if later:
            self.poller.spawn(self.poller.deliver(job))
        else:
            await self.poller.deliver(job)
        return job


def _unknown_message(exc: SubmitOutcomeUnknown) -> str:
    """Why the submit's outcome is unknown, in the requester's words, then what it means."""
    cause = exc.cause
    if isinstance(cause, ServerError):
        status = f" ({cause.status})" if cause.status else ""
        why = f"APIMart answered the submit with a server error{status}."
    elif isinstance(cause, ProtocolError):
        why = "APIMart's answer to the submit could not be read."
    else:
        why = "APIMart did not answer the submit in time (or the connection dropped)."
    return why + UNKNOWN_SUFFIX


def _error_code(exc: ApimartError) -> str:
    return exc.error_type or type(exc).__name__


def refusal_message(exc: ApimartError) -> str:
    """A sentence for the requester; the API's own words are kept (they may be Korean)."""
    if isinstance(exc, PaymentRequired):
        return BALANCE_EMPTY
    if isinstance(exc, AuthenticationFailed):
        return "reelbot's APIMart key was refused. The operator needs to check APIMART_API_KEY."
    if isinstance(exc, RateLimited):
        return "APIMart is busy right now (rate limited). Please try again in a minute."
    if isinstance(exc, ApiUnreachable):
        return "APIMart could not be reached. Please try again in a few minutes."
    reason = exc.api_message or str(exc)
    return f"APIMart refused the request: {reason}"
