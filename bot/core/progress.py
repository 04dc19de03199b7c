"""Neutral text for progress: a bar and durations, drawn the same by the terminal and Discord."""

from __future__ import annotations

BAR_WIDTH = 28


def progress_bar(percent: int, width: int = BAR_WIDTH) -> str:
    """`[██████░░░░░░]  42%` — used by the terminal and by Discord status messages."""
    percent = max(0, min(100, percent))
    filled = round(width * percent / 100)
    return f"[{'█' * filled}{'░' * (width - filled)}] {percent:3d}%"


def duration_text(seconds: float | None) -> str:
    """`42 s`, `3 min 5 s`, `1 h 2 min` — for elapsed time, estimates and ages."""
    if seconds is None:
        return "—"
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
