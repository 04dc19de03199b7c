"""Readiness: named checks behind `/readyz`, each bounded in time and cached briefly.

A check is a callable returning `None` when all is well or a short text saying what is wrong
(sync or async). Parts register their own: the runtime adds `database` and `poller`, the
Discord front end adds `gateway` (the core knows no gateway, only a name and a callback), and
the lease code can add its own later. A name can be *expected* before anyone provides it
(`expect`): until then it fails with "not reported yet", so a worker is never ready merely
because its gateway check has not been registered yet.

Each check runs at most once per `ttl` seconds however many probes arrive (concurrent
probes share the one evaluation in flight), and is abandoned after `timeout` seconds: a
database that stops answering makes `/readyz` say "timed out", it never makes it hang.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Check = Callable[[], "Awaitable[str | None] | str | None"]

#: Seconds one check may take before it counts as failed.
CHECK_TIMEOUT = 2.0
#: Seconds a check's answer is reused (a scraper or load balancer may probe often).
CHECK_TTL = 1.5
#: Longest text kept from a failing check (an exception's text can be long).
MAX_DETAIL = 200


@dataclass
class _Entry:
    check: Check | None
    ttl: float
    timeout: float
    result: str | None = "not checked yet"
    checked_at: float = float("-inf")
    inflight: asyncio.Task[str | None] | None = field(default=None, repr=False)


class Readiness:
    """The named checks of one process; `evaluate()` answers what `/readyz` shows."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._checks: dict[str, _Entry] = {}
        self._monotonic = monotonic

    def add(
        self, name: str, check: Check, *, ttl: float = CHECK_TTL, timeout: float = CHECK_TIMEOUT
    ) -> None:
        """Register (or replace) the check called `name`."""
        self._checks[name] = _Entry(check, ttl, timeout)

    def expect(self, name: str) -> None:
        """Declare a check someone will provide later; it fails until then."""
        self._checks.setdefault(name, _Entry(None, 0.0, CHECK_TIMEOUT))

    def remove(self, name: str) -> None:
        self._checks.pop(name, None)

    @property
    def names(self) -> list[str]:
        return sorted(self._checks)

    async def evaluate(self) -> dict[str, str | None]:
        """Every check's answer: None (passing) or why it fails."""
        names = sorted(self._checks)
        results = await asyncio.gather(*(self._one(name) for name in names))
        return dict(zip(names, results, strict=True))

    async def _one(self, name: str) -> str | None:
        entry = self._checks[name]
        if entry.check is None:
            return "not reported yet"
        now = self._monotonic()
        if now - entry.checked_at < entry.ttl:
            return entry.result
        if entry.inflight is None or entry.inflight.done():
            entry.inflight = asyncio.create_task(self._run(entry), name=f"reelbot-ready-{name}")
        return await asyncio.shield(entry.inflight)

    async def close(self) -> None:
        """Cancel checks still running (the process is stopping)."""
        tasks = [e.inflight for e in self._checks.values() if e.inflight and not e.inflight.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, entry: _Entry) -> str | None:
        assert entry.check is not None
        try:
            async with asyncio.timeout(entry.timeout):
                outcome = entry.check()
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            result = None if outcome is None else str(outcome)[:MAX_DETAIL]
        except TimeoutError:
            result = f"no answer within {entry.timeout:g} s"
        except Exception as exc:
            # The probe is unauthenticated: name the kind of failure, keep the details (which
            # may name hosts or users) for the log.
            log.debug("readiness check failed", exc_info=True)
            result = f"failed: {type(exc).__name__}"
        entry.result = result
        entry.checked_at = self._monotonic()
        return result
