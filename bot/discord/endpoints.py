"""Where discord.py sends its requests: Discord itself, or a REST proxy / local fake.

`DISCORD_API_BASE` and `DISCORD_GATEWAY_URL` are product settings (a shared REST proxy such as
nirn-proxy is pointed at this way; the end-to-end tests point them at the local fake Discord).
discord.py reads these class attributes for every request, so setting them once at start is
enough; reconnects use the `resume_gateway_url` that READY hands out.
"""

from __future__ import annotations

import discord.asset
import discord.gateway
import discord.http
import yarl


def point_discord_py_at(rest_base: str, gateway_url: str, cdn_base: str | None = None) -> None:
    """Set discord.py's REST base, first gateway URL and (optionally) asset CDN base."""
    discord.http.Route.BASE = rest_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    if cdn_base is not None:
        discord.asset.Asset.BASE = cdn_base.rstrip("/")
