"""UTC days and months: the keys of the usage rows and when each cap resets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def day_key(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def month_start_key(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-01")


def days_ago_key(now: float, days: int) -> str:
    """The first day of a window of `days` days ending today (7d → today and 6 before)."""
    return (datetime.fromtimestamp(now, UTC) - timedelta(days=days - 1)).strftime("%Y-%m-%d")


def next_day(now: float) -> float:
    """Unix time of the next UTC midnight (when daily caps reset)."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=1)).timestamp()


def next_month(now: float) -> float:
    """Unix time of the first of next month, 00:00 UTC (when monthly caps reset)."""
    start = datetime.fromtimestamp(now, UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month).timestamp()
