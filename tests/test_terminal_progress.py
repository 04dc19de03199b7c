"""The progress line of `reelbot generate`, rendered at fixed widths and times."""

from __future__ import annotations

import asyncio
import io
import os

import pytest

from bot.core.job import Job, JobState
from bot.core.request import build_request
from bot.terminal.generate import TerminalNotifier, render_progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frames(stream: Tty) -> list[str]:
    return [f.rstrip(" \n") for f in stream.getvalue().split("\r") if f.strip()]


def job(progress: int, state: JobState = JobState.RUNNING) -> Job:
    request = build_request(model="sora-2", prompt="a fox")
    return Job(1, state, request, created_at=0.0, task_id="task_01ABCDEFGH", progress=progress)


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (80, "[████████████░░░░░░░░░░░░░░░░]  42%  1m05s  task task_01ABCDEFGH"),
        (40, "[██████████░░░░░░░░░░░░░░░]  42%  1m05s"),
        (24, "[████░░░░░]  42%  1m05s"),
        (12, "[█░░]  42% "),
    ],
)
def test_the_line_fits_the_terminal(width: int, expected: str) -> None:
    line = render_progress(42, 65.3, width, task_id="task_01ABCDEFGH")
    assert line == expected
    assert len(line) < width


async def test_the_line_is_redrawn_while_progress_stands_still() -> None:
    stream, clock = Tty(), Clock()
    notifier = TerminalNotifier(
        stream, clock=clock, terminal_size=lambda: os.terminal_size((60, 20)), interval=0.01
    )
    await notifier.job_progress(job(30))
    for _ in range(3):
        clock.now += 7
        await asyncio.sleep(0.05)
    notifier.stop()
    shown = frames(stream)
    assert all(" 30% " in f for f in shown)
    elapsed = {f.split("%")[1].split()[0] for f in shown}
    assert {"0s", "7s", "14s", "21s"} <= elapsed
    assert all(len(f) < 60 for f in shown)


async def test_a_completed_job_ends_at_100_percent() -> None:
    stream, clock = Tty(), Clock()
    notifier = TerminalNotifier(
        stream, clock=clock, terminal_size=lambda: os.terminal_size((80, 20))
    )
    await notifier.job_progress(job(87))
    clock.now += 3
    await notifier.job_finished(job(87, JobState.COMPLETED))
    assert frames(stream)[-1] == "[████████████████████████████] 100%     3s  task task_01ABCDEFGH"
    assert stream.getvalue().endswith("\n")


async def test_a_failed_job_keeps_its_progress() -> None:
    stream = Tty()
    notifier = TerminalNotifier(stream, terminal_size=lambda: os.terminal_size((80, 20)))
    await notifier.job_progress(job(40))
    await notifier.job_finished(job(40, JobState.FAILED))
    assert " 40% " in frames(stream)[-1]


async def test_a_narrowed_terminal_is_never_overrun() -> None:
    stream, clock = Tty(), Clock()
    widths = iter([100, 100, 30, 30, 30, 30])
    notifier = TerminalNotifier(
        stream, clock=clock, terminal_size=lambda: os.terminal_size((next(widths, 30), 20))
    )
    await notifier.job_progress(job(10))
    await notifier.job_progress(job(50))
    await notifier.job_progress(job(60))
    notifier.stop()
    # The padding that wipes a longer previous line is cut to the new width, too.
    raw = stream.getvalue().split("\r")
    assert all(len(f) < 30 for f in raw[-2:])


async def test_json_mode_draws_nothing() -> None:
    stream = Tty()
    notifier = TerminalNotifier(stream, quiet=True)
    await notifier.job_progress(job(10))
    await notifier.job_finished(job(10, JobState.COMPLETED))
    assert stream.getvalue() == ""
