"""Fault injection: answer the next matching requests with an error (instead of handling
them, or after handling them: the work is done and the answer lost), late, or not at all."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

from aiohttp import web

from bot.testing.fake_discord.protocol import default_error_message, json_response
from bot.testing.fake_discord.records import FaultRule
from bot.testing.fake_discord.world import World


class Faults(World):
    """`fail_next` rules, consulted by the REST and CDN handlers before they answer."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._faults: list[FaultRule] = []

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        code: int = 0,
        message: str = "",
        times: int = 1,
        *,
        retry_after: float = 0.05,
        errors: dict[str, Any] | None = None,
        is_global: bool = False,
        after_processing: bool = False,
        drop: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` matching requests with an error.

        ``after_processing``: the request is handled first (a message is created, an edit
        applied), as when Discord answers 5xx or the connection drops after doing the work.
        ``drop``: close the connection instead of answering. ``delay``: hold the answer that
        many seconds first (a status of 0 then gives the normal answer, late: see
        :meth:`hold_next`).

        ``path_regex`` is ``re.search``-ed against the API-relative path (e.g.
        ``r"^/channels/\\d+/messages$"``; CDN paths are matched raw). ``method`` may be ``"*"``.
        A 429 gets the ``retry_after`` JSON body plus ``Retry-After``/``X-RateLimit-*`` and
        ``Via`` headers (discord.py treats a 429 without ``Via`` as a Cloudflare ban), so
        discord.py sleeps ``retry_after`` and retries.
        """
        self._faults.append(
            FaultRule(
                method=method.upper(),
                pattern=re.compile(path_regex),
                status=status,
                code=code,
                message=message or default_error_message(status),
                remaining=times,
                retry_after=retry_after,
                errors=errors,
                is_global=is_global,
                after_processing=after_processing,
                drop=drop,
                delay=delay,
            )
        )

    def hold_next(
        self,
        method: str,
        path_regex: str,
        seconds: float,
        *,
        times: int = 1,
        processed: bool = True,
    ) -> None:
        """Hold the answers to the next matching requests ``seconds``.

        ``processed``: the request takes effect at once and only the answer waits (the
        message exists while the client waits); False: nothing happens until the hold ends.
        """
        self.fail_next(
            method, path_regex, 0, times=times, after_processing=processed, delay=seconds
        )

    def _match_fault(self, method: str, path: str) -> FaultRule | None:
        for rule in self._faults:
            if rule.remaining <= 0:
                continue
            if rule.method not in ("*", method.upper()) or not rule.pattern.search(path):
                continue
            rule.remaining -= 1
            return rule
        return None

    async def _apply_fault(
        self, rule: FaultRule, request: web.Request, normal: web.StreamResponse | None
    ) -> web.StreamResponse:
        """The answer a matched rule gives (after its delay); `normal` if it has no status."""
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.drop:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        if rule.status == 0 and normal is not None:
            return normal
        return self._fault_response(rule)

    def _fault_response(self, rule: FaultRule) -> web.Response:
        if rule.status == 429:
            body: dict[str, Any] = {
                "message": rule.message,
                "retry_after": rule.retry_after,
                "global": rule.is_global,
            }
            if rule.code:
                body["code"] = rule.code
            headers = {
                "Retry-After": str(max(1, int(rule.retry_after + 0.999))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + rule.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
                "X-RateLimit-Bucket": "fakebucket" + secrets.token_hex(4),
                "X-RateLimit-Scope": "global" if rule.is_global else "user",
                "Via": "1.1 google",
            }
            if rule.is_global:
                headers["X-RateLimit-Global"] = "true"
            return json_response(body, 429, headers)
        err: dict[str, Any] = {"message": rule.message, "code": rule.code}
        if rule.errors:
            err["errors"] = rule.errors
        return json_response(err, rule.status)
