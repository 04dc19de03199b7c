"""Discord's per-channel message bucket, enforced: 5 requests per channel per 5 s, else 429.

Off unless asked for (`FakeDiscord(channel_limit=(5, 5.0))`): most tests post a few messages
and should not wait out a bucket. When on, every message request to a channel (post, edit,
delete) counts, accepted or not; one over the limit gets a 429 with `retry_after` (so
discord.py waits and retries, as against Discord). `max_in_window()` is the measurement:
the most requests any channel received in any window of that length.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections import defaultdict, deque

from aiohttp import web

from bot.testing.fake_discord.protocol import json_response

CHANNEL_MESSAGES = re.compile(r"^/channels/(\d+)/messages(?:/\d+)?$")


class ChannelBuckets:
    """Sliding-window counts of message requests per channel (real time)."""

    def __init__(self, limit: int = 5, per: float = 5.0) -> None:
        self.limit = limit
        self.per = per
        #: Every message request per channel (arrival times), for `max_in_window`.
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self._accepted: dict[int, deque[float]] = defaultdict(deque)
        self.rejected = 0

    def check(self, method: str, path: str, at: float | None = None) -> web.Response | None:
        """None if the request may go ahead (and it is counted), else the 429 to answer.

        `at`: when the request arrived (`time.time()`, before its body was read: an upload's
        body takes a while, and Discord counts the request, not the end of its body)."""
        m = CHANNEL_MESSAGES.match(path)
        if m is None or method not in ("POST", "PATCH", "DELETE"):
            return None
        channel = int(m.group(1))
        now = time.time() if at is None else at
        self.arrivals[channel].append(now)
        accepted = self._accepted[channel]
        while accepted and now - accepted[0] >= self.per:
            accepted.popleft()
        if len(accepted) < self.limit:
            accepted.append(now)
            return None
        self.rejected += 1
        retry_after = max(0.001, accepted[0] + self.per - now)
        body = {"message": "You are being rate limited.", "retry_after": retry_after}
        headers = {
            "Retry-After": str(max(1, int(retry_after + 0.999))),
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Bucket": f"channel-{channel}",
            "X-RateLimit-Scope": "user",
            "Via": "1.1 google",
        }
        return json_response({**body, "global": False}, 429, headers)

    def max_in_window(self, window: float | None = None) -> int:
        """The most message requests any one channel received within `window` seconds."""
        window = self.per if window is None else window
        best = 0
        for arrived in self.arrivals.values():
            times = sorted(arrived)  # bodies are read concurrently: counted out of order
            for i, t in enumerate(times):
                # requests in [t, t + window): a window that starts with request i
                best = max(best, bisect_left(times, t + window) - i)
        return best
