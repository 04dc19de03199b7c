"""The terminal as a front end: a progress bar on stderr and a readable result.

`run_generate` drives one job through the same runtime and pipeline as the Discord bot; with
`fake=True` it first starts the stand-in APIMart in-process on 127.0.0.1, so a fresh machine
with no key shows the whole flow in a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiohttp import web

from bot.core import interrupts
from bot.core.config import Settings
from bot.core.deadline import deadline_in
from bot.core.job import Job, JobState, plausible_money, plausible_time
from bot.core.jobs import ImageFile, Origin
from bot.core.owner import terminal_origin
from bot.core.poller import FixedSchedule
from bot.core.progress import BAR_WIDTH, progress_bar
from bot.core.request import VideoRequest
from bot.core.runtime import Runtime, open_runtime
from bot.terminal import advice

log = logging.getLogger(__name__)

FAKE_API_KEY = "reelbot-offline-demo"
#: In the offline demo a 4-minute job takes 2 seconds.
FAKE_TIME_SCALE = 120.0
#: How often the progress line is redrawn: the elapsed time moves even when progress does not.
REDRAW_INTERVAL_S = 0.5
#: The narrowest bar drawn; on a terminal narrower still, the line is cut to its width.
MIN_BAR = 3
STAND_IN_NOTE = (
    "a stand-in link (offline demo): no real video was made and the link died with this "
    "command; drop --fake and set APIMART_API_KEY for a real video"
)


def _clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s"


def render_progress(percent: int, elapsed: float, width: int, task_id: str | None = None) -> str:
    """One progress line that fits in `width` columns (one is kept free: no wrap at the edge).

    What gives way on a narrow terminal, in order: the task id, then the bar's length, then
    (below MIN_BAR) the line is simply cut.
    """
    room = max(1, width - 1)
    tail = f" {_clock_text(elapsed):>6}"
    task = f"  task {task_id}" if task_id else ""
    bar_width = BAR_WIDTH
    # `[` + bar + `] ` + `100%` = bar + 7 columns.
    if bar_width + 7 + len(tail) + len(task) > room:
        task = ""
    if bar_width + 7 + len(tail) > room:
        bar_width = max(MIN_BAR, room - 7 - len(tail))
    line = f"{progress_bar(percent, bar_width)}{tail}{task}"
    return line[:room]


class TerminalNotifier:
    """Draws one progress line on stderr (when it is a terminal) and resolves when done.

    The line is redrawn every REDRAW_INTERVAL_S by a ticker (so the elapsed time moves while
    the API reports the same progress), fits the terminal's current width, and shows 100 % when
    the job completes. `clock` and `terminal_size` are injectable so tests render at fixed
    times and widths. The elapsed time is the real wall time, also in the offline demo.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
        terminal_size: Callable[[], os.terminal_size] = shutil.get_terminal_size,
        interval: float = REDRAW_INTERVAL_S,
    ) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.done: dict[int, asyncio.Future[Job]] = {}
        self.clock = clock
        self.terminal_size = terminal_size
        self.interval = interval
        self._started = clock()
        self._percent = 0
        self._task_id: str | None = None
        self._drawn = 0
        self._ticker: asyncio.Task[None] | None = None

    def waiter(self, job_id: int) -> asyncio.Future[Job]:
        return self.done.setdefault(job_id, asyncio.get_running_loop().create_future())

    @property
    def drawing(self) -> bool:
        return self.tty and not self.quiet

    def draw(self) -> None:
        """Redraw the line in place (padding over a longer previous line)."""
        if not self.drawing:
            return
        width = self.terminal_size().columns
        line = render_progress(
            self._percent, self.clock() - self._started, width, task_id=self._task_id
        )
        pad = max(0, min(self._drawn, width - 1) - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._drawn = len(line)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.draw()

    def start(self) -> None:
        """Start redrawing on a timer (from inside the event loop)."""
        if self.drawing and self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="reelbot-progress")
            self.draw()

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def job_progress(self, job: Job) -> None:
        if self.quiet:
            return
        self._percent = max(self._percent, job.progress)
        self._task_id = job.task_id
        if self.tty:
            self.start()
            self.draw()
        elif job.progress == 0:
            print(f"submitted: task {job.task_id}", file=self.stream)

    async def job_finished(self, job: Job) -> None:
        self.stop()
        if self.drawing:
            if job.state is JobState.COMPLETED:
                self._percent = 100
            self._task_id = job.task_id or self._task_id
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
        future = self.waiter(job.id)
        if not future.done():
            future.set_result(job)


def _error_text(job: Job, base_url: str) -> str | None:
    """The failure in the operator's terms when the reason is a refusal; else the core's text."""
    return advice.for_code(job.error_code, base_url) or job.error_message


def format_outcome(
    job: Job, *, base_url: str = "APIMart", fake: bool = False, wall_s: float | None = None
) -> str:
    """The human summary `reelbot generate` prints on stdout.

    In the offline demo the link is a stand-in and the API's run time is simulated (sped up
    FAKE_TIME_SCALE times): the elapsed time shown is the real one, the simulated one beside it.
    """
    lines = [f"{job.state.value}: {job.request.summary()}  (task {job.task_id or '—'})"]
    for url in job.video_urls:
        lines.append(f"  video    {url}")
    if fake and job.video_urls:
        lines.append(f"  note     {STAND_IN_NOTE}")
    if plausible_time(job.expires_at) is not None and not fake:
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
        if fake:
            charged = "  (pretend: the stand-in charges nothing real)"
        lines.append(f"  cost     {cost} (credits {credits}){charged}")
    if fake and wall_s is not None:
        simulated = f" (the stand-in simulated {job.elapsed:.0f} s)" if job.elapsed else ""
        lines.append(f"  elapsed  {wall_s:.0f} s{simulated}")
    elif job.elapsed is not None:
        lines.append(f"  elapsed  {job.elapsed:.0f} s")
    error = _error_text(job, base_url)
    if error:
        lines.append(f"  error    {error}")
    return "\n".join(lines)


def outcome_json(
    job: Job, *, base_url: str = "APIMart", fake: bool = False, wall_s: float | None = None
) -> dict[str, Any]:
    """`--json`'s one object: the job's outcome, the error in operator terms, real time in --fake."""
    outcome = job.outcome()
    outcome["error"] = _error_text(job, base_url)
    if fake and wall_s is not None:
        outcome["elapsed_s"] = round(wall_s, 1)
    return outcome


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
        if interrupts.pending() is not None:
            # Ctrl-C while reelbot was starting: nothing was created or sent yet.
            raise KeyboardInterrupt

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
        stack.callback(notifier.stop)
        notifier.start()
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
        # Someone stares at this terminal for the job's whole life: its polls go first.
        runtime.poller.watch(job.id, math.inf)
        # --timeout bounds the submit's retry waits too (a 429 asking for 30 s, thrice).
        with deadline_in(settings.JOB_TIMEOUT):
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
