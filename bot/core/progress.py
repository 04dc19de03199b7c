"""A text progress bar: neutral, so the terminal and Discord status messages draw the same one."""

from __future__ import annotations

BAR_WIDTH = 28


def progress_bar(percent: int, width: int = BAR_WIDTH) -> str:
    """`[██████░░░░░░]  42%` — used by the terminal and by Discord status messages."""
    percent = max(0, min(100, percent))
    filled = round(width * percent / 100)
    return f"[{'█' * filled}{'░' * (width - filled)}] {percent:3d}%"
