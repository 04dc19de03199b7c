"""A stop asked for while `reelbot run` is still starting: nothing is taken on afterwards.

`reelbot run` drains the runtime (`stop_work`) as soon as SIGTERM comes, while discord.py's
login may still be on its way to `setup_hook`, which calls `Runtime.resume()`. Before this, a
resume after the drain switched claiming back on and took the waiting jobs (and opened the
queue) in a process that was shutting down: those jobs then sat under its lease instead of
going to a live worker at once.
"""

from __future__ import annotations

from pathlib import Path

from bot.core.clock import SystemClock
from bot.core.job import JobState
from bot.core.request import build_request
from bot.core.runtime import open_runtime
from bot.testing.notifier import RecordingNotifier
from tests.discordfix import reel_settings


async def test_a_resume_after_the_stop_takes_on_no_job(api_url: str, tmp_path: Path) -> None:
    settings = reel_settings(api_url, tmp_path)
    async with open_runtime(settings, RecordingNotifier(), resume=False, role="bot") as rt:
        job = await rt.store.create(
            build_request(model="sora-2", prompt="a fox"), now=SystemClock().now()
        )
        await rt.store.update(job, state=JobState.RUNNING, task_id="task_waiting")
        await rt.stop_work()  # SIGTERM during start-up
        assert await rt.resume() == 0  # setup_hook, reached after the stop
        assert job.id not in rt.poller
        assert not rt.leases.held
