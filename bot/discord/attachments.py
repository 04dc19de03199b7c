"""Reading a member's attachments: only from Discord's CDN, bounded in size and time.

The flow reads reference images right after deferring. Attachment URLs arrive inside the
interaction, so they are checked before anything is deferred (`check_attachment_url`): an
attachment (image or reference video) on another host is refused with a clear message, and
the stand-in Discord's host is allowed only when `DISCORD_API_BASE` points at it.

`CdnReader` is the reader `reelbot run` uses: `bot.core.fetch` with the attachment's declared
size as the cap (Discord reports it exactly; a CDN that sends more is refused) and
`ATTACHMENT_TIMEOUT` as the deadline, so a hanging CDN ends the job with "timed out reading
the attachment" instead of holding it for minutes and blaming Discord. Tests on simcord,
whose CDN lives inside discord.py's HTTP client, swap in a reader that goes through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import discord

from bot.core.fetch import ATTACHMENT_TIMEOUT, DISCORD_CDN_HOSTS, FetchPolicy, fetch
from bot.core.request import Problem, RequestInvalid

#: Reads one attachment's bytes, at most `limit` of them; raises `bot.core.fetch.FetchError`.
AttachmentReader = Callable[[discord.Attachment, int], Awaitable[bytes]]


class CdnReader:
    """Attachments over the process's one `aiohttp` session, through `bot.core.fetch`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: FetchPolicy,
        *,
        timeout: float = ATTACHMENT_TIMEOUT,
    ) -> None:
        self.session = session
        self.policy = policy
        self.timeout = timeout

    async def __call__(self, attachment: discord.Attachment, limit: int) -> bytes:
        cap = min(limit, attachment.size) if attachment.size > 0 else limit
        fetched = await fetch(
            self.session,
            attachment.url,
            limit=cap,
            timeout=self.timeout,
            policy=self.policy,
            what="the attachment",
        )
        return fetched.data


def check_attachment_url(attachment: discord.Attachment, policy: FetchPolicy, field: str) -> None:
    """Refuse an attachment whose URL is not on Discord's CDN (or the configured stand-in's)."""
    parts = urlsplit(attachment.url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    schemes = ("https", "http") if policy.allow_local else ("https",)
    if parts.scheme in schemes and policy.host_allowed(host, port):
        return
    cdn = " or ".join(sorted(DISCORD_CDN_HOSTS))
    raise RequestInvalid(
        [Problem(field, f"must be a file attached on Discord ({cdn}), not a link to {host or '?'}")]
    )
