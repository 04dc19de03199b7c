"""The terminal as a front end: a progress bar on stderr and a readable result.

`run_generate` drives one job through the same runtime and pipeline as the Discord bot; with
`fake=True` it first starts the stand-in APIMart in-process on 127.0.0.1, so a fresh machine
with no key shows the whole flow in a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiohttp import web

from bot.core.config import Settings
from bot.core.job import Job, plausible_money, plausible_time
from bot.core.jobs import ImageFile, Origin
from bot.core.owner import terminal_origin
from bot.core.poller import FixedSchedule
from bot.core.progress import progress_bar
from bot.core.request import VideoRequest
from bot.core.runtime import Runtime, open_runtime

log = logging.getLogger(__name__)

FAKE_API_KEY = "reelbot-offline-demo"
#: In the offline demo a 4-minute job takes 2 seconds.
FAKE_TIME_SCALE = 120.0


class TerminalNotifier:
    """Draws one progress line on stderr (when it is a terminal) and resolves when done."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.done: dict[int, asyncio.Future[Job]] = {}
        self._started = time.monotonic()

    def waiter(self, job_id: int) -> asyncio.Future[Job]:
        return self.done.setdefault(job_id, asyncio.get_running_loop().create_future())

    async def job_progress(self, job: Job) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self._started
        if self.tty:
            line = f"\r{progress_bar(job.progress)} {elapsed:5.0f}s  task {job.task_id}"
            self.stream.write(line)
            self.stream.flush()
        elif job.progress == 0:
            print(f"submitted: task {job.task_id}", file=self.stream)

    async def job_finished(self, job: Job) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        future = self.waiter(job.id)
        if not future.done():
            future.set_result(job)


def format_outcome(job: Job) -> str:
    """The human summary `reelbot generate` prints on stdout."""
    lines = [f"{job.state.value}: {job.request.summary()}  (task {job.task_id or '—'})"]
    for url in job.video_urls:
        lines.append(f"  video    {url}")
    if plausible_time(job.expires_at) is not None:
        assert job.expires_at is not None
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(job.expires_at))
        lines.append(f"  expires  {stamp} — download it before then")
    cost_value, credits_value = plausible_money(job.cost), plausible_money(job.credits_cost)
    if cost_value is None and credits_value is None and job.state.terminal:
        lines.append("  cost     unknown" + (" (it may still be billed)" if job.task_id else ""))
    if cost_value is not None or credits_value is not None:
        cost = "—" if cost_value is None else f"{cost_value:g}"
        credits = "—" if credits_value is None else f"{credits_value:g}"
        charged = "" if job.charged else "  (not charged)"
        lines.append(f"  cost     {cost} (credits {credits}){charged}")
    if job.elapsed is not None:
        lines.append(f"  elapsed  {job.elapsed:.0f} s")
    if job.error_message:
        lines.append(f"  error    {job.error_message}")
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def fake_api_server() -> AsyncIterator[str]:
    """Serve the stand-in APIMart on a free 127.0.0.1 port for the duration of the block."""
    from bot.testing.fake_apimart import FakeApimart

    fake = FakeApimart(api_key=FAKE_API_KEY, time_scale=FAKE_TIME_SCALE)
    runner = web.AppRunner(fake.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Interruption:
    """Set by SIGINT/SIGTERM: the command stops following, says what it knows, and exits."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    signal_name: str | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.signal_name = sig.name
        self.event.set()
        # A second Ctrl-C is the user insisting: the default handler ends the process.
        loop = asyncio.get_running_loop()
        for other in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(other)


async def follow(runtime: Runtime, notifier: TerminalNotifier, job: Job, stop: Interruption) -> Job:
    """Wait for the job's end or an interruption; on interruption return the job as it is.

    An interrupted command first lets a submit already sent come back (bounded by
    API_TIMEOUT), so the task id it printed is the one APIMart billed.
    """
    waiter = notifier.waiter(job.id)
    stopped = asyncio.create_task(stop.event.wait())
    try:
        pending: set[asyncio.Future[Any]] = {waiter, stopped}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            return waiter.result()
        await runtime.jobs.drain(runtime.settings.API_TIMEOUT)
        return waiter.result() if waiter.done() else job
    finally:
        stopped.cancel()


async def run_generate(
    settings: Settings,
    request: VideoRequest,
    files: Sequence[ImageFile],
    *,
    fake: bool = False,
    quiet: bool = False,
    stop: Interruption | None = None,
) -> Job:
    """One job, start to finish, through the shared runtime; returns the finished job (or the
    job as it stood when SIGINT/SIGTERM came: see `stop`)."""
    notifier = TerminalNotifier(quiet=quiet)
    stop = stop or Interruption()
    stop.install()
    async with contextlib.AsyncExitStack() as stack:
        database_url = None
        if fake:
            base_url = await stack.enter_async_context(fake_api_server())
            settings = settings.model_copy(update={"APIMART_BASE_URL": base_url})
            database_url = "sqlite+aiosqlite:///:memory:"
        # One job with a person watching its progress bar: poll at the documented steady
        # pace. Saving requests is the bot's concern (many jobs), not this command's.
        schedule = FixedSchedule(
            settings.POLL_INITIAL_DELAY, settings.POLL_INTERVAL, settings.POLL_MAX_INTERVAL
        )
        runtime = await stack.enter_async_context(
            open_runtime(
                settings, notifier, database_url=database_url, resume=False, schedule=schedule
            )
        )
        origin = Origin(**terminal_origin(runtime.clock.now()))
        job = await runtime.jobs.create(request, origin=origin)
        launch = asyncio.create_task(runtime.jobs.launch(job, files))
        try:
            return await follow(runtime, notifier, job, stop)
        finally:
            if not launch.done():  # interrupted before the submit: nothing was sent
                launch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await launch
    raise AssertionError("unreachable")


def interrupted_text(job: Job) -> str:
    """What an interrupted `generate` says on stderr: the task id and how to fetch it later."""
    if job.task_id:
        return (
            f"interrupted: task {job.task_id} (job #{job.id}) was sent to APIMart and may still "
            f"be made and billed. Fetch it later with: reelbot status {job.task_id}"
        )
    if job.state.value == "submitting":
        return (
            f"interrupted while sending job #{job.id}: APIMart may still have accepted it "
            "(and bill it). `reelbot jobs` lists it."
        )
    return f"interrupted: job #{job.id} was not sent to APIMart; nothing was charged."
