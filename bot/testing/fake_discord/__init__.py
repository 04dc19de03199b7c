"""A local fake Discord (gateway + REST + CDN) for end-to-end tests.

:class:`FakeDiscord` is an :mod:`aiohttp.web` application that speaks enough of Discord's
gateway (v10, JSON, optional ``zlib-stream``/``zstd-stream`` transport compression) and
REST API (``/api/v10``) for an unmodified :mod:`discord.py` 2.x client to log in, connect,
sync application commands, receive interactions and answer them, post channel messages
with files and download attachments from the CDN.

Typical use::

    fake = FakeDiscord()
    guild = fake.add_guild("Test Guild")
    channel = fake.add_text_channel(guild["id"], "general")
    await fake.start()
    point_discord_py_at(fake.rest_base, fake.gateway_url)   # or env vars for a subprocess
    ... start the bot ...
    await fake.wait_connected()
    await fake.dispatch("INTERACTION_CREATE", fake.slash_interaction(...))
    req = await fake.wait_for(lambda r: r.method == "POST" and r.path.endswith("/callback"))

Everything the bot does over REST is recorded in :attr:`FakeDiscord.requests`; unknown routes
answer 404 with a JSON error naming the route (and are recorded, see
:attr:`FakeDiscord.unhandled_requests`) so gaps are loud. It implements what reelbot and
discord.py use, nothing more: a route the bot starts to use shows up there first.

Knobs for hostile tests: :meth:`~FakeDiscord.fail_next` (any status per route, 429 with
``retry_after``; a 429 holds an answer for that long), :meth:`~FakeDiscord.disconnect_all`
(abrupt gateway close), :meth:`~FakeDiscord.send_reconnect` (op 7), and channel permission
overwrites (403 50013/50001).

The modules, each building on the one before: ``protocol`` (wire constants, error answers),
``records`` (recorded requests), ``world`` (users, guilds, channels, members, permissions),
``faults``, ``cdn``, ``messages``, ``gateway``, ``rest``, ``interactions``, and ``server``
(the public :class:`FakeDiscord` with its aiohttp app).
"""

from __future__ import annotations

from bot.discord.endpoints import point_discord_py_at
from bot.testing.fake_discord.protocol import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    PERMISSIONS,
)
from bot.testing.fake_discord.records import RecordedRequest
from bot.testing.fake_discord.server import FakeDiscord, discord_py_pointed_at

__all__ = [
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "PERMISSIONS",
    "FakeDiscord",
    "RecordedRequest",
    "discord_py_pointed_at",
    "point_discord_py_at",
]
