"""What `/metrics` shows: the process's Prometheus metrics, defined in one place.

Each runtime owns its own `CollectorRegistry` (not prometheus-client's global one), so tests can
open several runtimes in one process and a library that registers into the global registry
can never leak its series into ours. Counters are incremented where things happen (a poll, an
API error, a Discord REST error, a lease takeover); the database-wide gauges (jobs by state,
queue length, spend today) are sampled by `Sampler` every `SAMPLE_EVERY` seconds, so a
scraper hammering `/metrics` costs no queries at all.

Label values are bounded: API error kinds are exception class names, Discord errors are HTTP
status codes, and spend is shown for the `MAX_GUILD_SERIES` biggest spenders of the day with
the rest summed under `guild="other"` (thousands of servers must not mean thousands of series).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.process_collector import ProcessCollector

from bot.core.apimart import ApimartClient, ApimartError, TaskInfo, UploadedImage
from bot.core.job import TERMINAL, JobState

log = logging.getLogger(__name__)

#: Seconds between two samples of the database-wide gauges.
SAMPLE_EVERY = 15.0
#: A sample that takes longer than this (seconds) is abandoned; the old values stay.
SAMPLE_TIMEOUT = 10.0
#: Servers shown by name in `reelbot_spend_today`; the rest are summed as "other".
MAX_GUILD_SERIES = 100
#: Poll latency buckets (seconds): a healthy API answers in tens of milliseconds, a
#: struggling one in seconds, and a retried read can take up to the client's timeout.
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OTHER_GUILDS = "other"
NO_GUILD = "none"


class Metrics:
    """Every metric reelbot exports, registered in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # RSS, CPU seconds, open file descriptors
        self.jobs = Gauge(
            "reelbot_jobs", "Jobs in the database by state (sampled).", ["state"], registry=r
        )
        self.queue_length = Gauge(
            "reelbot_queue_length",
            "Jobs in the database not yet running at APIMart (sampled).",
            registry=r,
        )
        self.tracked = Gauge(
            "reelbot_poller_tracked_jobs", "Running jobs this process follows.", registry=r
        )
        self.polls = Counter("reelbot_polls", "Status polls sent to APIMart.", registry=r)
        self.poll_seconds = Histogram(
            "reelbot_poll_duration_seconds",
            "Time to learn a task's status (retries included).",
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self.api_errors = Counter(
            "reelbot_api_errors",
            "APIMart calls that failed (after the client's own retries), by kind of error.",
            ["kind"],
            registry=r,
        )
        self.api_rate_limited = Counter(
            "reelbot_api_rate_limited", "429 answers from APIMart.", registry=r
        )
        self.lease_takeovers = Counter(
            "reelbot_lease_takeovers",
            "Jobs taken over from a worker whose lease expired.",
            registry=r,
        )
        self.spend_today = Gauge(
            "reelbot_spend_today",
            "Cost APIMart reported for jobs created since midnight UTC, by server (sampled).",
            ["guild"],
            registry=r,
        )
        self.discord_rest_errors = Counter(
            "reelbot_discord_rest_errors",
            "Discord REST calls that failed, by HTTP status (0: no answer).",
            ["status"],
            registry=r,
        )
        self.http_refused = Counter(
            "reelbot_http_connections_refused",
            "Connections to the HTTP listener closed at once because it was full.",
            registry=r,
        )
        self.webhook_callbacks = Gauge(
            "reelbot_webhook_callbacks_arriving",
            "1 while APIMart's callbacks announce finished jobs; 0 once polls keep finding them "
            "first (check WEBHOOK_PUBLIC_URL; polling runs at the normal pace meanwhile).",
            registry=r,
        )
        self.webhook_missed = Gauge(
            "reelbot_webhook_missed_callbacks",
            "Finished jobs found by polling that no callback had announced (since start).",
            registry=r,
        )
        self.interaction_claims = Counter(
            "reelbot_interaction_claims",
            "Discord interactions this worker claimed (won), left to another replica (lost), "
            "or could not claim for a database error (error: the member was asked to retry).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("won", "lost", "error"):
            self.interaction_claims.labels(outcome=outcome)
        self.sample_failures = Counter(
            "reelbot_metrics_sample_failures",
            "Samples of the database-wide gauges that failed or timed out.",
            registry=r,
        )
        for state in JobState:
            self.jobs.labels(state=state.value)

    def render(self) -> bytes:
        """The text exposition format, as Prometheus scrapes it."""
        return generate_latest(self.registry)

    # -- hooks for the other parts ---------------------------------------------------------

    def api_error(self, exc: BaseException) -> None:
        self.api_errors.labels(kind=type(exc).__name__).inc()

    def rate_limited(self, retry_after: float | None = None) -> None:
        self.api_rate_limited.inc()

    def discord_rest_error(self, status: int | None) -> None:
        """Called by the Discord front end wherever it catches a failed REST call."""
        code = status if isinstance(status, int) and 0 <= status < 1000 else 0
        self.discord_rest_errors.labels(status=str(code)).inc()

    # -- samples ---------------------------------------------------------------------------

    def set_sample(self, counts: Mapping[str, int], spend: Mapping[str | None, Any]) -> None:
        """Replace the database-wide gauges with one consistent sample."""
        for state in JobState:
            self.jobs.labels(state=state.value).set(counts.get(state.value, 0))
        known = {state.value for state in JobState}
        for name, count in counts.items():
            if name not in known:
                self.jobs.labels(state=name[:32]).set(count)  # a state added by a newer worker
        waiting = {JobState.RUNNING.value} | {s.value for s in TERMINAL}
        self.queue_length.set(sum(n for s, n in counts.items() if s not in waiting))
        ranked = sorted(spend.items(), key=lambda item: Decimal(str(item[1] or 0)), reverse=True)
        self.spend_today.clear()
        other = Decimal(0)
        for index, (guild, amount) in enumerate(ranked):
            value = Decimal(str(amount or 0))
            if index < MAX_GUILD_SERIES:
                self.spend_today.labels(guild=guild or NO_GUILD).set(float(value))
            else:
                other += value
        if len(ranked) > MAX_GUILD_SERIES:
            self.spend_today.labels(guild=OTHER_GUILDS).set(float(other))


class SampledStore(Protocol):
    async def count_by_state(self) -> dict[str, int]: ...

    async def spend_by_guild(self, *, since: float) -> dict[str | None, float]: ...


def start_of_day(now: float) -> float:
    """Midnight UTC of the day `now` falls in (Unix seconds)."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


class Sampler:
    """Counts jobs by state and today's spend every `every` seconds into the gauges."""

    def __init__(
        self,
        metrics: Metrics,
        store: SampledStore,
        *,
        now: Any = time.time,
        every: float = SAMPLE_EVERY,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.now = now
        self.every = every
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def sample(self) -> None:
        async with asyncio.timeout(SAMPLE_TIMEOUT):
            counts = await self.store.count_by_state()
            spend = await self.store.spend_by_guild(since=start_of_day(self.now()))
        self.metrics.set_sample(counts, spend)

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
                if self._failing:
                    log.info("metrics: sampling the database works again")
                self._failing = False
            except Exception as exc:  # the database is down: /readyz says so; log once
                self.metrics.sample_failures.inc()
                if not self._failing:
                    log.warning("metrics: sampling the database failed: %r", exc)
                self._failing = True
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="reelbot-metrics-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class MeteredApimartClient(ApimartClient):
    """The API client, counting polls, their latency and every failed call by kind."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    async def get_task(self, task_id: str) -> TaskInfo:
        self.metrics.polls.inc()
        started = time.perf_counter()
        try:
            return await super().get_task(task_id)
        except ApimartError as exc:
            self.metrics.api_error(exc)
            raise
        finally:
            self.metrics.poll_seconds.observe(time.perf_counter() - started)

    async def submit(self, payload: Mapping[str, Any]) -> str:
        try:
            return await super().submit(payload)
        except ApimartError as exc:
            self.metrics.api_error(exc)
            raise

    async def upload_image(self, data: bytes, filename: str, content_type: str) -> UploadedImage:
        try:
            return await super().upload_image(data, filename, content_type)
        except ApimartError as exc:
            self.metrics.api_error(exc)
            raise
