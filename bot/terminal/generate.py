"""The terminal as a front end: a progress bar on stderr and a readable result.

`run_generate` drives one job through the same runtime and pipeline as the Discord bot; with
`fake=True` it first starts the stand-in APIMart in-process on 127.0.0.1, so a fresh machine
with no key shows the whole flow in a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import TextIO

from aiohttp import web

from bot.core.config import Settings
from bot.core.job import Job
from bot.core.jobs import ImageFile, Origin
from bot.core.poller import FixedSchedule
from bot.core.progress import progress_bar
from bot.core.request import VideoRequest
from bot.core.runtime import open_runtime

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
    if job.expires_at:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(job.expires_at))
        lines.append(f"  expires  {stamp} — download it before then")
    if job.cost is not None or job.credits_cost is not None:
        cost = "—" if job.cost is None else f"{job.cost:g}"
        credits = "—" if job.credits_cost is None else f"{job.credits_cost:g}"
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


async def run_generate(
    settings: Settings,
    request: VideoRequest,
    files: Sequence[ImageFile],
    *,
    fake: bool = False,
    quiet: bool = False,
) -> Job:
    """One job, start to finish, through the shared runtime; returns the finished job."""
    notifier = TerminalNotifier(quiet=quiet)
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
        job = await runtime.jobs.create(request, origin=Origin(kind="cli"))
        waiter = notifier.waiter(job.id)
        await runtime.jobs.launch(job, files)
        return await waiter
    raise AssertionError("unreachable")
