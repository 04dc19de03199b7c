"""The process's one HTTP listener: `/healthz`, `/readyz`, `/metrics` and the webhook.

`reelbot run` always listens on `HTTP_LISTEN` (default `0.0.0.0:8080`), because an
orchestrator (Docker's HEALTHCHECK, Kubernetes probes, a load balancer) and Prometheus need
somewhere to ask; APIMart's `/callback` shares it when a webhook is configured.

* `/healthz` — the process and its event loop are alive: 200 whenever it can answer at all.
* `/readyz` — every readiness check passes (`bot.core.health`): 200, or 503 with a JSON body
  naming each failing check and why.
* `/metrics` — Prometheus text format from the runtime's own registry (`bot.core.metrics`).

It faces the internet (the webhook must), so everything about it is bounded: bodies by
`client_max_size`; a request's headers must arrive within `HEADER_TIMEOUT` of connecting
(aiohttp's keep-alive timer also runs before the first request: a slowloris that drips a
header is closed with it); a handler gets `REQUEST_TIMEOUT` (a body dripped byte by byte
gets 408); at most `MAX_CONNECTIONS` connections are open (beyond, new ones are closed at
once, so a flood cannot exhaust file descriptors); no access log, and aiohttp's per-request
error logging is raised to ERROR (`bot.core.logs`), so garbage in a tight loop writes no
log line per request. Handlers are cancelled when their client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.core.health import Readiness
from bot.core.metrics import CONTENT_TYPE, Metrics
from bot.core.webhook import MAX_BODY, WebhookServer

log = logging.getLogger(__name__)

#: Seconds a client has to send its request headers (and an idle keep-alive connection lives).
HEADER_TIMEOUT = 10.0
#: Seconds one request may take from its headers to the end of its answer.
REQUEST_TIMEOUT = 15.0
#: Connections open at once; probes and scrapes need a handful, the webhook a few more.
MAX_CONNECTIONS = 256
#: Connections the kernel queues before we accept them.
BACKLOG = 128
#: Seconds a rendered /metrics page is reused (Prometheus scrapes every 15-60 s).
METRICS_TTL = 1.0
#: Limits on the request line and headers (aiohttp answers 400 beyond them).
MAX_LINE = 4096
MAX_FIELD = 4096
MAX_HEADERS = 64


class _Refused(asyncio.Protocol):
    """What a connection beyond the cap gets: closed at once, its descriptor freed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


@web.middleware
async def _deadline(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await handler(request)
    except TimeoutError:
        return web.json_response({"ok": False, "error": "request took too long"}, status=408)


class HttpListener:
    """Started and closed by the runtime; `port` is the bound port (useful with port 0)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        readiness: Readiness,
        metrics: Metrics,
        webhook: WebhookServer | None = None,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.readiness = readiness
        self.metrics = metrics
        self.webhook = webhook
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.app = self.make_app()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._rendered: tuple[float, bytes] | None = None

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_deadline])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_page)
        if self.webhook is not None:
            self.webhook.add_routes(app)
        return app

    # -- handlers ---------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        results = await self.readiness.evaluate()
        failing = {name: why for name, why in results.items() if why is not None}
        body = {
            "ready": not failing,
            "checks": {name: ("ok" if why is None else why) for name, why in results.items()},
            "failing": sorted(failing),
        }
        return web.Response(
            text=json.dumps(body),
            status=503 if failing else 200,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def metrics_page(self, request: web.Request) -> web.Response:
        # Rendered at most once per METRICS_TTL: a scraper stuck in a loop costs no CPU.
        now = time.monotonic()
        if self._rendered is None or now - self._rendered[0] >= METRICS_TTL:
            self._rendered = (now, self.metrics.render())
        response = web.Response(body=self._rendered[1])
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    # -- life cycle -------------------------------------------------------------------------

    def _protocol(self) -> asyncio.BaseProtocol:
        runner = self._runner
        assert runner is not None and runner.server is not None
        if len(runner.server.connections) >= self.max_connections:
            self.metrics.http_refused.inc()
            return _Refused()
        return runner.server()

    async def start(self) -> None:
        """Bind and listen; raises OSError (the address is taken, say) with a clear text."""
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=self.header_timeout,
            max_line_size=MAX_LINE,
            max_field_size=MAX_FIELD,
            max_headers=MAX_HEADERS,
            lingering_time=1.0,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        try:
            # Our own server rather than web.TCPSite, so the protocol factory can enforce the
            # connection cap; the runner's request handling is unchanged.
            self._server = await loop.create_server(
                self._protocol, self.host or None, self.port, backlog=BACKLOG, reuse_address=True
            )
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise OSError(
                exc.errno, f"cannot listen on {self.host}:{self.port} ({exc.strerror})"
            ) from None
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info(
            "listening on http://%s:%s (/healthz /readyz /metrics%s)",
            self.host,
            self.port,
            " /callback" if self.webhook is not None else "",
        )

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stop accepting
        if self._runner is not None:
            await self._runner.cleanup()  # close the open connections (1 s grace)
            self._runner = None
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
