"""The public facade: `FakeDiscord`, an aiohttp app serving gateway, REST and CDN on one port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from bot.discord.endpoints import point_discord_py_at
from bot.testing.fake_discord.interactions import Interactions


class FakeDiscord(Interactions):
    """An in-process fake of Discord's gateway, REST API and CDN (see the package docstring)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.app = web.Application(client_max_size=256 * 1024 * 1024)
        self.app.router.add_route("GET", "/", self._gateway_handler)
        self.app.router.add_route("*", "/api/{tail:.*}", self._api_handler)
        self.app.router.add_route("GET", "/attachments/{tail:.*}", self._cdn_handler)
        self.app.router.add_route("GET", "/ephemeral-attachments/{tail:.*}", self._cdn_handler)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.host = host
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def close(self) -> None:
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake discord shutting down")
        for task in list(self._bg_tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.contextmanager
def discord_py_pointed_at(
    rest_base: str, gateway_url: str, cdn_base: str | None = None
) -> Iterator[None]:
    """Context manager version of :func:`point_discord_py_at` that restores the originals."""
    import discord.asset
    import discord.gateway
    import discord.http

    saved = (
        discord.http.Route.BASE,
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
        discord.asset.Asset.BASE,
    )
    point_discord_py_at(rest_base, gateway_url, cdn_base)
    try:
        yield
    finally:
        (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            discord.asset.Asset.BASE,
        ) = saved
