"""Job events as Discord messages: the `Notifier` the poller talks to when the bot runs.

Why it looks the way it does:

* Everything goes to the channel with the bot's own token (`PartialMessage.edit`,
  `PartialMessageable.send`). The interaction token dies after 15 minutes and videos can
  take longer; it is only a last resort when the bot may not post in the channel.
* Progress edits are cosmetic and throttled three ways: per message (`edit_interval`), per
  channel (`channel_edit_interval`, about one a second) and for the whole process
  (`edits_per_second`), so a busy channel never meets Discord's edit limits. They run as
  background tasks: `job_progress` returns at once, so a rate-limited edit never holds one
  of the poller's slots. At most one edit per job is in flight; a progress event meanwhile
  is skipped, not queued: the next one, or the final edit, shows the latest state.
* Every request to a channel (progress edits, the final status edit, the result, a
  follow-up) takes a slot of that channel's budget (`ChannelBudget`: Discord's 5 per 5 s):
  results first, progress edits dropped first.
* Results are streamed to a temporary file, never held in memory: hundreds of videos to
  deliver after a restart must not need their total size in RAM (and the poller runs only a
  few deliveries at once).
* The final status edit is best-effort: once the result message is in the channel the job
  counts as delivered, whatever happens to that edit (shutdown, a closed session, 5xx).
* Delivery errors are sorted: the channel is gone → logged and considered delivered; no
  permission or file too large → the same message again without the file (the link is in
  it), then a followup through a still-valid interaction token; 5xx / connection trouble →
  raised, so the poller retries later.
* A result is posted at most once, also when Discord created the message but the answer was
  lost (5xx after processing, a dropped connection, a SIGKILL mid-POST): every result carries
  a nonce derived from the job (`result_nonce`, sent with `enforce_nonce`, so Discord answers
  a repeat with the message it already has), and before posting the channel's recent
  messages are read for the job's result (its Details button names the job), so a
  redelivery after a restart, long past Discord's nonce window, finds it and stops.
* When the channel refuses the result and no live interaction can carry it (always the case
  after a restart), the status message's final edit carries the link and the cost: it is the
  requester's only copy. The log names the reason Discord gave and the channel.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import aiohttp
import discord

from bot.core.catalog import DEFAULT_UPLOAD_LIMIT
from bot.core.clock import Clock
from bot.core.fetch import RESULT_DOWNLOAD_TIMEOUT, FetchError, FetchPolicy, fetch
from bot.core.job import Job, JobState
from bot.core.ratelimit import TokenBucket
from bot.core.send_window import SharedWindow
from bot.discord import render
from bot.discord.channel_budget import CHANNEL_LIMIT, ChannelBudget, Priority
from bot.discord.custom_ids import is_result_button

log = logging.getLogger(__name__)

#: Discord's code for "Request entity too large" (the 413 of file uploads).
ENTITY_TOO_LARGE = 40005
#: Discord's codes for a channel that refuses the bot, in words for the log.
REFUSALS = {50001: "missing access (View Channel)", 50013: "missing permission"}
#: How many of the channel's latest messages are searched for a result already posted.
HISTORY_LOOKBACK = 50
#: Discord accepts nonces of at most 25 characters.
NONCE_LENGTH = 25

ViewFactory = Callable[[Job], discord.ui.View | None]
#: A result download is written to disk in pieces of this size, each in a worker thread.
WRITE_BYTES = 1 << 20
#: A downloaded result: a named temporary file (deleted when closed); discord.py opens it by
#: name for each upload attempt and streams it from disk.
Video = IO[bytes]


def result_nonce(job_id: int) -> str:
    """The nonce of a job's result message: the same on every attempt, in every process."""
    nonce = f"reelbot-job-{job_id}"
    if len(nonce) > NONCE_LENGTH:
        nonce = "rbj-" + hashlib.sha256(nonce.encode()).hexdigest()[: NONCE_LENGTH - 4]
    return nonce


def refusal_reason(exc: discord.HTTPException) -> str:
    """Why Discord refused, for the log: `missing permission (403, code 50013: …)`."""
    words = REFUSALS.get(exc.code, "refused")
    return f"{words} ({exc.status}, code {exc.code}: {exc.text or 'no text'})"


class EditThrottle:
    """At most one edit per message per `interval`, one per channel per `channel_interval`,
    and `rate` edits per second overall (a `TokenBucket`, spent only by edits that go out)."""

    def __init__(
        self,
        clock: Clock,
        *,
        interval: float,
        rate: float,
        burst: float | None = None,
        channel_interval: float = 0.0,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.channel_interval = channel_interval
        self.overall = TokenBucket(clock, rate, burst)
        self._last: dict[int, float] = {}
        self._channel_last: dict[int, float] = {}

    def allow(self, key: int, channel: int | None = None) -> bool:
        """True (and counted) if an edit of `key` (in `channel`) may go out now."""
        now = self.clock.now()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        if channel is not None:
            channel_last = self._channel_last.get(channel)
            if channel_last is not None and now - channel_last < self.channel_interval:
                return False
        if not self.overall.take():
            return False
        self._last[key] = now
        if channel is not None:
            if len(self._channel_last) > 1024:  # forget quiet channels; their limit has passed
                self._channel_last = {
                    c: t for c, t in self._channel_last.items() if now - t < self.channel_interval
                }
            self._channel_last[channel] = now
        return True

    def forget(self, key: int) -> None:
        self._last.pop(key, None)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a job's messages go, read back from the job's `origin`."""

    channel_id: int
    message_id: int | None
    guild_id: int | None
    upload_limit: int

    @classmethod
    def of(cls, job: Job) -> Destination | None:
        origin = job.origin
        if not origin.get("channel_id"):
            return None
        message_id = origin.get("message_id")
        guild_id = origin.get("guild_id")
        return cls(
            channel_id=int(origin["channel_id"]),
            message_id=int(message_id) if message_id else None,
            guild_id=int(guild_id) if guild_id else None,
            upload_limit=int(origin.get("upload_limit") or DEFAULT_UPLOAD_LIMIT),
        )


class DiscordNotifier:
    """Implements `bot.core.poller.Notifier` with real discord.py calls."""

    def __init__(
        self,
        client: discord.Client,
        *,
        session: aiohttp.ClientSession,
        clock: Clock,
        edit_interval: float = 10.0,
        channel_edit_interval: float = 1.0,
        edits_per_second: float = 4.0,
        download_timeout: float = RESULT_DOWNLOAD_TIMEOUT,
        view_factory: ViewFactory | None = None,
        channel_limit: int = CHANNEL_LIMIT,
        fetch_policy: FetchPolicy | None = None,
        on_rest_error: Callable[[int | None], None] | None = None,
        shared_window: SharedWindow | None = None,
    ) -> None:
        self.client = client
        #: Every request to a channel goes through its budget (results first); with
        #: `shared_window` (PostgreSQL) the budget is shared by every worker.
        self.channels = ChannelBudget(clock, limit=channel_limit, shared=shared_window)
        #: Told the HTTP status (None: no answer) of every failed REST call caught here;
        #: the runtime counts them in `/metrics`.
        self.on_rest_error = on_rest_error
        self.session = session
        self.clock = clock
        self.throttle = EditThrottle(
            clock,
            interval=edit_interval,
            rate=edits_per_second,
            channel_interval=channel_edit_interval,
        )
        self.download_timeout = download_timeout
        self.view_factory = view_factory
        #: Where result downloads may go (https, public addresses; see `bot.core.fetch`).
        self.fetch_policy = fetch_policy or FetchPolicy()
        #: The buttons under a status message (Cancel while queued); None: no buttons.
        self.status_view: ViewFactory | None = None
        #: Live interactions by job id: the fallback when the channel refuses the bot. In
        #: memory only — a token is a credential and is useless after 15 minutes anyway.
        self._interactions: dict[int, discord.Interaction] = {}
        #: The progress edit in flight for each job (at most one).
        self._edits: dict[int, asyncio.Task[None]] = {}

    def remember(self, job_id: int, interaction: discord.Interaction) -> None:
        self._interactions[job_id] = interaction

    # -- Notifier ---------------------------------------------------------------------------

    async def job_progress(self, job: Job) -> None:
        """Start a throttled status edit in the background and return at once."""
        where = Destination.of(job)
        if where is None or where.message_id is None or job.state.terminal:
            return
        if job.state is JobState.QUEUED and job.queue_position is None:
            return  # its status message (with Cancel) was written by the front end
        if job.id in self._edits:
            return  # one edit per job at a time; the next event (or the final edit) catches up
        if not self.throttle.allow(job.id, where.channel_id):
            return
        if not self.channels.try_progress(where.channel_id):
            return  # the channel's slots are kept for results and final edits
        # Rendered now, so the edit shows this event's state even if it goes out later.
        rendered = render.status(job, self.clock.now())
        view = self.status_view(job) if self.status_view else None
        task = asyncio.create_task(
            self._progress_edit(job.id, where, rendered, view), name=f"reelbot-status-{job.id}"
        )
        self._edits[job.id] = task
        task.add_done_callback(functools.partial(self._edit_done, job.id))

    async def job_finished(self, job: Job) -> None:
        await self.client.wait_until_ready()
        where = Destination.of(job)
        if where is None:
            log.info("job %s: finished with no Discord channel to post to", job.id)
            return
        try:
            public = await self._post_result(job, where)
        finally:
            self.throttle.forget(job.id)
        # The result is in the channel: from here on nothing may raise, or the poller would
        # consider it undelivered and post it again (after a restart, say).
        self._interactions.pop(job.id, None)
        if where.message_id is None:
            return
        final = asyncio.ensure_future(self._final_edit(job, where, with_result=not public))
        try:
            await asyncio.shield(final)
        except asyncio.CancelledError:
            # Shutdown gave up waiting (the poller's drain). The result is posted, so this
            # returns normally and the job is marked delivered; only the cosmetic edit is lost.
            final.cancel()
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            log.info(
                "job %s: stopping; the result is posted, its final status edit skipped", job.id
            )

    async def _final_edit(self, job: Job, where: Destination, *, with_result: bool) -> None:
        """The status message's last edit: strictly best-effort.

        `with_result`: the result message could not be posted, so the status carries the
        link and the cost (after a restart it is the requester's only copy).
        """
        try:
            await self._cancel_edit(job.id)  # a late progress edit must not overwrite "done"
            await self.channels.acquire(where.channel_id, Priority.FINAL_STATUS)
            rendered = render.status(job, self.clock.now(), with_result=with_result)
            await self._edit_status(job.id, where, rendered)
        except Exception:
            log.exception("job %s: the final status edit failed; the result is posted", job.id)

    # -- background edits -------------------------------------------------------------------

    def _edit_done(self, job_id: int, task: asyncio.Task[None]) -> None:
        if self._edits.get(job_id) is task:
            del self._edits[job_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s: status edit crashed", job_id, exc_info=task.exception())

    async def _cancel_edit(self, job_id: int) -> None:
        task = self._edits.pop(job_id, None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def wait_for_edits(self) -> None:
        """Wait until the progress edits under way have gone out (or failed)."""
        while self._edits:
            await asyncio.gather(*self._edits.values(), return_exceptions=True)

    async def close(self) -> None:
        """Cancel progress edits still under way (they are cosmetic); called on shutdown."""
        tasks = list(self._edits.values())
        self._edits.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the parts --------------------------------------------------------------------------

    def _channel(self, where: Destination) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(where.channel_id, guild_id=where.guild_id)

    async def _progress_edit(
        self,
        job_id: int,
        where: Destination,
        rendered: render.Rendered,
        view: discord.ui.View | None,
    ) -> None:
        """A progress edit, if the (shared) channel budget still has room for it."""
        if await self.channels.confirm_progress(where.channel_id):
            await self._edit_status(job_id, where, rendered, view)

    async def _edit_status(
        self,
        job_id: int,
        where: Destination,
        rendered: render.Rendered,
        view: discord.ui.View | None = None,
    ) -> None:
        """Edit the status message with the bot token; failures are logged, never raised."""
        assert where.message_id is not None
        message = self._channel(where).get_partial_message(where.message_id)
        try:
            # A queued job keeps its Cancel button; it goes once the job is sent to APIMart.
            await message.edit(**rendered.kwargs(), view=view)
        except discord.HTTPException as exc:
            self._rest_error(exc.status)
            log.warning("job %s: could not edit its status message: %s", job_id, exc)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            # RuntimeError: discord.py's HTTP session was closed under the request (shutdown).
            self._rest_error(None)
            log.warning("job %s: could not edit its status message: %r", job_id, exc)

    async def _post_result(self, job: Job, where: Destination) -> bool:
        """Post the result once; False when it could not be shown to the requester."""
        channel = self._channel(where)
        if await self._already_posted(channel, job):
            log.info(
                "job %s: its result is already in channel %s; not posted again",
                job.id,
                where.channel_id,
            )
            return True
        video = None
        if job.state is JobState.COMPLETED and job.video_urls:
            video = await self.download(job.video_urls[0], where.upload_limit, job_id=job.id)
        try:
            return await self._send_result(job, where, channel, video)
        finally:
            if video is not None:
                video.close()

    async def _send_result(
        self,
        job: Job,
        where: Destination,
        channel: discord.PartialMessageable,
        video: Video | None,
    ) -> bool:
        attempts = [video, None] if video is not None else [None]
        for data in attempts:
            try:
                await self.channels.acquire(where.channel_id, Priority.RESULT)
                await channel.send(**self._message(job, data))
                log.info(
                    "job %s: result posted in channel %s (%s)",
                    job.id,
                    where.channel_id,
                    "video attached" if data is not None else "link",
                )
                return True
            except discord.NotFound as exc:
                self._rest_error(exc.status)
                log.warning(
                    "job %s: channel %s is gone (%s); result dropped", job.id, where.channel_id, exc
                )
                return True
            except discord.Forbidden as exc:
                self._rest_error(exc.status)
                if data is not None:
                    log.warning(
                        "job %s: channel %s refused the file: %s; posting the link",
                        job.id,
                        where.channel_id,
                        refusal_reason(exc),
                    )
                    continue
                return await self._fallback(job, where, exc)
            except discord.HTTPException as exc:
                self._rest_error(exc.status)
                if data is not None and (exc.status == 413 or exc.code == ENTITY_TOO_LARGE):
                    log.info("job %s: video too large for this server; posting the link", job.id)
                    continue
                if exc.status >= 500 or exc.status == 429:
                    raise
                log.error("job %s: Discord refused the result message: %s", job.id, exc)
                return False
        return False

    async def _already_posted(self, channel: discord.PartialMessageable, job: Job) -> bool:
        """Whether the job's result is among the channel's latest messages (by this bot).

        A redelivery after an ambiguous failure (or a restart) must not post it again; the
        nonce covers Discord's few minutes, this covers the rest. Unreadable history (no Read
        Message History permission, an error) counts as "not found": the nonce still helps.
        """
        me = self.client.user
        if me is None:
            return False
        nonce = result_nonce(job.id)
        try:
            async for message in channel.history(limit=HISTORY_LOOKBACK):
                if message.author.id != me.id:
                    continue
                if message.nonce is not None and str(message.nonce) == nonce:
                    return True
                for row in message.components:
                    for item in getattr(row, "children", ()):
                        custom_id = getattr(item, "custom_id", None) or ""
                        if is_result_button(custom_id, job.id):
                            return True
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.info("job %s: could not read the channel's history: %s", job.id, exc)
        return False

    def _rest_error(self, status: int | None) -> None:
        if self.on_rest_error is not None:
            try:
                self.on_rest_error(status)
            except Exception:  # counting must never break a delivery
                log.exception("on_rest_error hook failed")

    def _message(self, job: Job, video: Video | None) -> dict[str, Any]:
        """Keyword arguments for `send`: pings the requester and nobody else, ever."""
        rendered = render.result(job, self.clock.now(), attached=video is not None)
        kwargs: dict[str, Any] = {
            **rendered.kwargs(),
            "allowed_mentions": allowed_mentions(job),
            # Same nonce on every attempt; discord.py sends it with enforce_nonce.
            "nonce": result_nonce(job.id),
        }
        if video is not None:
            video.flush()  # discord.py opens it by name and streams it (its own handle)
            kwargs["file"] = discord.File(video.name, filename=f"reelbot-{job.id}.mp4")
        view = self.view_factory(job) if self.view_factory else None
        if view is not None:
            kwargs["view"] = view
        return kwargs

    async def _fallback(self, job: Job, where: Destination, exc: discord.HTTPException) -> bool:
        """The channel refuses the bot: answer through the interaction while its token lives.

        False when that is impossible (after a restart, or 15 minutes on): the status edit
        then carries the link. The log says why Discord refused, and where.
        """
        reason = refusal_reason(exc)
        interaction = self._interactions.get(job.id)
        if interaction is None or interaction.is_expired():
            log.error(
                "job %s: may not post in channel %s: %s; the interaction has expired (or the "
                "bot restarted since), so the status message carries the link",
                job.id,
                where.channel_id,
                reason,
            )
            return False
        kwargs = self._message(job, None)
        kwargs.pop("view", None)
        kwargs.pop("nonce", None)
        try:
            channel_id = job.origin.get("channel_id")
            if channel_id:
                await self.channels.acquire(int(channel_id), Priority.RESULT)
            await interaction.followup.send(**kwargs)
            log.info(
                "job %s: channel %s refused the result (%s); sent as an interaction followup",
                job.id,
                where.channel_id,
                reason,
            )
            return True
        except discord.HTTPException as followup_exc:
            self._rest_error(followup_exc.status)
            log.error(
                "job %s: may not post in channel %s: %s; the followup failed too: %s",
                job.id,
                where.channel_id,
                reason,
                followup_exc,
            )
            return False

    async def download(self, url: str, limit: int, *, job_id: int | None = None) -> Video | None:
        """The video, streamed to a temporary file, if it fits `limit` and is a video; None
        (→ post the link) on any failure. The caller closes it (which deletes it).

        Through `bot.core.fetch`: `limit` as the cap, a deadline, and every redirect checked
        (https, public addresses only); written to disk in `WRITE_BYTES` pieces off the loop.
        """
        video: Video = tempfile.NamedTemporaryFile(prefix="reelbot-", suffix=".mp4")
        pending = bytearray()

        async def write(chunk: bytes) -> None:
            pending.extend(chunk)
            if len(pending) >= WRITE_BYTES:
                await asyncio.to_thread(video.write, bytes(pending))
                pending.clear()

        try:
            fetched = await fetch(
                self.session,
                url,
                limit=limit,
                timeout=self.download_timeout,
                policy=self.fetch_policy,
                what="the video",
                into=write,
            )
            await asyncio.to_thread(video.write, bytes(pending))
            await asyncio.to_thread(video.flush)
        except FetchError as exc:
            video.close()
            log.info("job %s: video not attached (%s); posting the link", job_id, exc)
            return None
        except OSError as exc:  # the temporary file: a full or read-only disk
            video.close()
            log.warning("job %s: could not store the video (%s); posting the link", job_id, exc)
            return None
        except BaseException:
            video.close()
            raise
        if not looks_like_video(fetched.content_type, fetched.head):
            video.close()
            log.warning(
                "job %s: the result URL served %s, not a video; posting the link",
                job_id,
                fetched.content_type or "an unknown type",
            )
            return None
        return video


def looks_like_video(content_type: str, data: bytes) -> bool:
    """Only a video is attached as the result: by its type, or by MP4/MOV or WebM bytes
    (some storage serves videos as `application/octet-stream`); `data`: its first bytes."""
    if content_type.startswith("video/"):
        return True
    return data[4:8] == b"ftyp" or data.startswith(b"\x1a\x45\xdf\xa3")


def allowed_mentions(job: Job) -> discord.AllowedMentions:
    """Only the requester may be pinged, whatever the prompt contains."""
    users: list[discord.abc.Snowflake] = []
    if job.requester and job.requester.isdigit():
        users.append(discord.Object(id=int(job.requester)))
    return discord.AllowedMentions(everyone=False, roles=False, users=users, replied_user=False)
