"""APIMart's optional webhook: a hint to poll a task now, never a source of truth.

When `WEBHOOK_PUBLIC_URL` is set, submits carry `"webhook": WEBHOOK_PUBLIC_URL` and APIMart
POSTs the task's status answer to `<WEBHOOK_PUBLIC_URL>/callback` when the task ends (retried
up to 3 times, duplicates possible, no signature). The process's one HTTP listener
(`bot.core.http`, on `HTTP_LISTEN`) serves these routes; the handler does one thing with a callback: it moves that task's next poll to now
(`Poller.poke`). The poll reads the truth, so a forged "completed" body posts nothing, a
duplicate finds the task already finished (unknown by then: ignored), and an unknown task id
changes nothing. Polling continues as a slow safety net for callbacks that never come.

Every well-formed callback gets the same quick 200, known task or not (no oracle for
guessing task ids; no retries provoked). A body that is not JSON (deeply nested JSON
included) or names no task gets 400;
a body over `MAX_BODY` bytes gets 413 before it is read in full.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger(__name__)

#: A status answer is a few hundred bytes; anything bigger is not a callback.
MAX_BODY = 64 * 1024
#: Task ids are short; a longer "id" is garbage.
MAX_TASK_ID = 128


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
    """`POST …/callback` → `poller.poke(task_id)`; mounted on the process's HTTP listener."""

    def __init__(self, poller: Pokeable) -> None:
        self.poller = poller
        self.received = 0
        self.poked = 0
        self.unknown = 0
        self.rejected = 0
        self.app = self.make_app()

    def add_routes(self, app: web.Application) -> None:
        # APIMart appends "/callback" to the configured URL, which may carry a path prefix a
        # reverse proxy may or may not strip: accept any path ending in /callback.
        app.router.add_post("/callback", self.handle)
        app.router.add_post("/{prefix:.+}/callback", self.handle)

    def make_app(self) -> web.Application:
        """An app with only the webhook's routes (tests mount it on their own server)."""
        app = web.Application(client_max_size=MAX_BODY)
        self.add_routes(app)
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
