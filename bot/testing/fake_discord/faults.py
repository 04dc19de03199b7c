"""Fault injection: answer the next matching requests with an error instead of handling them."""

from __future__ import annotations

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
    ) -> None:
        """Answer the next ``times`` matching requests with an error.

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
            )
        )

    def _take_fault(self, method: str, path: str) -> web.Response | None:
        for rule in self._faults:
            if rule.remaining <= 0:
                continue
            if rule.method not in ("*", method.upper()) or not rule.pattern.search(path):
                continue
            rule.remaining -= 1
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
        return None
