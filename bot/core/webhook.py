"""APIMart's optional webhook: a hint to poll a task now, never a source of truth.

When `WEBHOOK_PUBLIC_URL` is set, submits carry `"webhook": WEBHOOK_PUBLIC_URL` and APIMart
POSTs the task's status answer to `<WEBHOOK_PUBLIC_URL>/callback` when the task ends (retried
up to 3 times, duplicates possible, no signature). This server listens on `WEBHOOK_LISTEN`
and does one thing with a callback: it moves that task's next poll to now
(`Poller.poke`). The poll reads the truth, so a forged "completed" body posts nothing, a
duplicate finds the task already finished (unknown by then: ignored), and an unknown task id
changes nothing. Polling continues as a slow safety net for callbacks that never come.

Every well-formed callback gets the same quick 200, known task or not (no oracle for
guessing task ids; no retries provoked). A body that is not JSON (deeply nested JSON
included) or names no task gets 400; a body over `MAX_BODY` bytes gets 413 before it is read
in full.

The listener faces the internet, so it is guarded below aiohttp (`ConnectionGuard`): at most
`MAX_CONNECTIONS` open connections (more are closed at once, so half-open "slowloris"
connections cannot use up the process's file descriptors, which the bot needs for APIMart and
Discord), every connection carries one request (`Connection: close`) that must arrive whole
within `HEADER_TIMEOUT`, and what the guard refuses is logged at most once per
`LOG_EVERY` seconds, with a count, never once per connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)

#: A status answer is a few hundred bytes; anything bigger is not a callback.
MAX_BODY = 64 * 1024
#: Task ids are short; a longer "id" is garbage.
MAX_TASK_ID = 128
#: Open connections at most; APIMart sends a few callbacks at a time.
MAX_CONNECTIONS = 64
#: Seconds a connection has to deliver its whole request (headers and body), then it is closed.
HEADER_TIMEOUT = 10.0
#: The guard's refusals are summarised in the log at most this often (seconds).
LOG_EVERY = 60.0


class ConnectionGuard:
    """Counts connections, refuses those over the cap, closes those too slow to ask.

    Sits between the listening socket and aiohttp's protocol (`GuardedProtocol`), so it
    works whatever aiohttp does with a half-sent request (it waits).
    """

    def __init__(
        self,
        *,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
        log_every: float = LOG_EVERY,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.log_every = log_every
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._timers: dict[GuardedProtocol, asyncio.TimerHandle] = {}
        self._last_log = -float("inf")
        self._unlogged = 0

    def opened(self, protocol: GuardedProtocol, transport: asyncio.Transport) -> bool:
        """A new connection: False (and closed) when over the cap."""
        if self.open >= self.max_connections:
            self.refused += 1
            transport.abort()
            self._note(f"over the cap of {self.max_connections} open connections")
            return False
        self.open += 1
        loop = asyncio.get_running_loop()
        self._timers[protocol] = loop.call_later(
            self.header_timeout, self._expire, protocol, transport
        )
        return True

    def answered(self, protocol: GuardedProtocol) -> None:
        timer = self._timers.pop(protocol, None)
        if timer is not None:
            timer.cancel()

    def closed(self, protocol: GuardedProtocol, counted: bool) -> None:
        self.answered(protocol)
        if counted:
            self.open -= 1

    def _expire(self, protocol: GuardedProtocol, transport: asyncio.Transport) -> None:
        self._timers.pop(protocol, None)
        self.timed_out += 1
        transport.abort()
        self._note(f"no whole request within {self.header_timeout:g} s")

    def _note(self, why: str) -> None:
        """Log refusals at most once per `log_every` seconds (a flood must not fill the disk)."""
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_log < self.log_every:
            return
        log.warning(
            "webhook: closed %d connection(s) (latest: %s; %d open)",
            self._unlogged,
            why,
            self.open,
        )
        self._unlogged = 0
        self._last_log = now


@web.middleware
async def one_request_per_connection(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`Connection: close` on every answer, so the guard's deadline covers each request."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.force_close()
        raise
    response.force_close()
    return response


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's request handler behind the guard (delegates everything to it)."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.counted = self.guard.opened(self, transport)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self, self.counted)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class Pokeable(Protocol):
    def poke(self, task_id: str) -> bool: ...


def task_id_of(body: Any) -> str | None:
    """The task id in a callback body shaped like the status answer (tolerantly), or None."""
    candidates: list[Any] = []
    if isinstance(body, Mapping):
        data = body.get("data", body)
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        if isinstance(data, Mapping):
            candidates += [data.get("id"), data.get("task_id")]
        candidates += [body.get("task_id"), body.get("id")]
    for value in candidates:
        if isinstance(value, str) and 0 < len(value.strip()) <= MAX_TASK_ID:
            return value.strip()
    return None


class WebhookServer:
    """`POST …/callback` → `poller.poke(task_id)`; started and closed by the runtime."""

    def __init__(
        self,
        poller: Pokeable,
        host: str = "0.0.0.0",
        port: int = 8080,
        *,
        guard: ConnectionGuard | None = None,
    ) -> None:
        self.poller = poller
        self.host = host
        self.port = port
        self.guard = guard or ConnectionGuard()
        self._listener: asyncio.Server | None = None
        self.received = 0
        self.poked = 0
        self.unknown = 0
        self.rejected = 0
        self.app = self.make_app()
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[one_request_per_connection])
        # APIMart appends "/callback" to the configured URL, which may carry a path prefix a
        # reverse proxy may or may not strip: accept any path ending in /callback.
        app.router.add_post("/callback", self.handle)
        app.router.add_post("/{prefix:.+}/callback", self.handle)
        app.router.add_get("/healthz", self.health)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.received += 1
        if request.content_length is not None and request.content_length > MAX_BODY:
            self.rejected += 1
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_BODY, actual_size=request.content_length
            )
        try:
            raw = await request.read()  # bounded by client_max_size (413 beyond it)
            body = json.loads(raw)
        except web.HTTPRequestEntityTooLarge:
            self.rejected += 1
            raise
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: JSON nested thousands deep; it is not a callback either.
            self.rejected += 1
            return web.json_response({"ok": False, "error": "body is not JSON"}, status=400)
        task_id = task_id_of(body)
        if task_id is None:
            self.rejected += 1
            return web.json_response({"ok": False, "error": "no task id"}, status=400)
        if self.poller.poke(task_id):
            self.poked += 1
            log.debug("webhook: poll task %s now", task_id)
        else:
            self.unknown += 1
            log.debug("webhook: task %s is not followed (finished, forged or foreign)", task_id)
        return web.json_response({"ok": True})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        runner = self._runner
        guard = self.guard

        def protocol() -> asyncio.Protocol:
            return GuardedProtocol(runner.server(), guard)  # type: ignore[misc]

        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(protocol, self.host, self.port, backlog=128)
        sockets = self._listener.sockets
        if sockets and self.port == 0:
            self.port = int(sockets[0].getsockname()[1])
        log.info("webhook listening on http://%s:%s/callback", self.host, self.port)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
