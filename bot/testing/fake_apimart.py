"""A stand-in for APIMart's asynchronous video API, for tests and local runs.

This is deliberately independent of the bot's own catalog and validation: it
hard-codes the server-side rules as documented in ``shared/apimart-video-api.md``
so that a bug in the bot's validation shows up as a 400 from this server instead
of being mirrored by it.  Where the documentation is vague the fake is *strict*
(e.g. Veo's resolution must be exactly ``720p``/``1080p``/``4K``), because a strict
stand-in catches more client mistakes than a lenient one.

Time is simulated: ``now = wall-clock epoch at start + (clock() - clock at start)
* time_scale``, so ``time_scale=100`` makes a 240 s task finish in 2.4 real seconds,
and an injected ``clock`` lets tests move time by hand.

Test controls: :meth:`FakeApimart.plan_next`, :meth:`FakeApimart.inject`,
:meth:`FakeApimart.complete_now`, :meth:`FakeApimart.fail_now`, and the recorded
``submits``, ``submit_attempts``, ``requests`` (and ``request_log`` with times and
clients), ``tasks``, ``uploads``,
``callbacks_sent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import json
import logging
import math
import secrets
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
from aiohttp import web

__all__ = [
    "CallbackAttempt",
    "FakeApimart",
    "FakeTask",
    "FakeTaskPlan",
    "run_fake_api",
    "serve",
]

log = logging.getLogger("bot.testing.fake_apimart")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_LIFETIME_S = 72 * 3600
VIDEO_LIFETIME_S = 86400
TICK_INTERVAL_S = 0.05
WEBHOOK_RETRY_DELAYS_S = (10.0, 30.0, 60.0)  # simulated seconds, divided by time_scale
WEBHOOK_TIMEOUT_S = 10.0

ENDPOINTS = frozenset({"submit", "task", "upload", "balance"})

DEFAULT_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "payment_required",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "server_error",
    502: "bad_gateway",
    503: "server_error",
    504: "server_error",
}

# Invented per-second prices (the real ones are not published); they only need to
# depend on model and resolution so that tests can see the difference.
PRICE_PER_SECOND: dict[str, dict[str, float]] = {
    "Omni-Flash-Ext": {"720p": 0.02, "1080p": 0.04, "4k": 0.08},
    "veo3.1-fast-official": {"720p": 0.05, "1080p": 0.06, "4k": 0.10},
    "veo3.1-quality-official": {"720p": 0.15, "1080p": 0.18, "4k": 0.30},
    "sora-2": {"720p": 0.01},
    "sora-2-pro": {"720p": 0.03, "1024p": 0.05, "1080p": 0.07},
}
CREDITS_PER_MONEY = 10

OMNI = "Omni-Flash-Ext"
VEO_MODELS = frozenset({"veo3.1-fast-official", "veo3.1-quality-official"})
SORA_MODELS = frozenset({"sora-2", "sora-2-pro"})
MODELS = frozenset({OMNI, *VEO_MODELS, *SORA_MODELS})


def _fake_mp4() -> bytes:
    """A few KB that start like an MP4 (``ftyp`` box), enough for Discord to accept."""
    ftyp = b"ftyp" + b"isom" + (0x200).to_bytes(4, "big") + b"isomiso2avc1mp41"
    ftyp = (len(ftyp) + 4).to_bytes(4, "big") + ftyp
    free = (8).to_bytes(4, "big") + b"free"
    payload = hashlib.sha256(b"reelbot").digest() * 128  # 4 KiB
    mdat = (len(payload) + 8).to_bytes(4, "big") + b"mdat" + payload
    return ftyp + free + mdat


FAKE_MP4 = _fake_mp4()


@dataclass
class FakeTaskPlan:
    """How a submitted task will behave."""

    duration_s: float = 240.0  # simulated seconds from submit until the terminal state
    fail: bool = False  # ends as failed instead of completed
    error_message: str = "upstream timeout"
    estimated_time: int = 600


@dataclass
class FakeTask:
    """Server-side state of one task. Status is derived from the simulated time."""

    task_id: str
    model: str
    body: dict[str, Any]
    plan: FakeTaskPlan
    created: float  # simulated unix seconds
    ends_at: float
    seconds: int
    resolution: str
    samples: int
    cost: float
    base_url: str  # where result files are served
    webhook: str | None = None
    final_status: str | None = None  # "completed" | "failed" once terminal
    finished_at: float | None = None
    final_progress: int | None = None
    error_message: str | None = None
    # deterministic per-task shape of the progress curve
    wobble: float = 0.5
    waves: int = 2
    gamma: float = 1.0
    fail_cap: int = 60


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as it reached the stand-in: when (its real monotonic clock), what, and who
    (the client's User-Agent, which names the reelbot worker)."""

    at: float
    method: str
    path: str
    agent: str


@dataclass
class CallbackAttempt:
    """One webhook delivery attempt."""

    url: str
    task_id: str
    status: int | None  # HTTP status received, None on a connection error/timeout
    error: str | None = None


@dataclass
class _Injection:
    status: int
    error_type: str | None
    times: int
    body: bytes | None
    delay: float
    retry_after: float | str | None
    accept: bool
    huge: int = 0
    truncate: bool = False

    @property
    def passthrough(self) -> bool:
        """Only a delay: the request is then handled normally."""
        return self.status == 200 and self.body is None and not self.huge and not self.truncate


def _err(status: int, message: str, error_type: str | None = None) -> web.Response:
    etype = error_type or DEFAULT_ERROR_TYPES.get(status, "server_error")
    return web.json_response(
        {"error": {"code": status, "message": message, "type": etype}}, status=status
    )


def _is_http_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://")) and len(value) > 8


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sniff_image(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


IMAGE_TYPES = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
}


class _Rejected(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _validate(body: dict[str, Any]) -> tuple[str, int, str, int]:
    """Apply the documented server rules; return (model, seconds, price resolution, samples).

    Raises :class:`_Rejected` with the documented 400 ``type``.
    """
    bad = "invalid_request_error"
    model = body.get("model")
    if not isinstance(model, str) or model not in MODELS:
        raise _Rejected(bad, f"unsupported model: {model!r}")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _Rejected(bad, "prompt is required")

    if model == OMNI:
        return _validate_omni(body)
    if model in VEO_MODELS:
        return _validate_veo(model, body)
    return _validate_sora(model, body)


def _url_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(_is_http_url(v) for v in value):
        raise _Rejected("invalid_request_error", f"{key} must be an array of http(s) URLs")
    return value


def _validate_omni(body: dict[str, Any]) -> tuple[str, int, str, int]:
    bad = "invalid_request_error"
    videos = _url_list(body, "video_urls")
    images = _url_list(body, "image_urls")
    duration = body.get("duration")
    if duration is not None and videos:
        raise _Rejected(bad, "duration and video_urls cannot be sent together")
    if duration is None:
        seconds = 6
    elif _is_int(duration) and duration in (4, 6, 8, 10):
        seconds = duration
    else:
        raise _Rejected("invalid_duration", f"invalid duration {duration}, must be one of 4/6/8/10")
    resolution = body.get("resolution", "720p")
    if not isinstance(resolution, str) or resolution.lower() not in ("720p", "1080p", "4k"):
        raise _Rejected(
            "invalid_resolution", f"invalid resolution {resolution}, must be one of 720p/1080p/4k"
        )
    aspect = body.get("aspect_ratio")
    size = body.get("size")
    for name, value in (("aspect_ratio", aspect), ("size", size)):
        if value is not None and value not in ("16:9", "9:16"):
            raise _Rejected(bad, f"invalid {name} {value}, must be 16:9 or 9:16")
    if aspect is not None and size is not None and aspect != size:
        raise _Rejected(bad, "size and aspect_ratio disagree")
    gen_type = body.get("generation_type")
    if gen_type is not None and gen_type not in ("frame", "reference"):
        raise _Rejected(bad, f"invalid generation_type {gen_type}")
    n = len(images)
    if gen_type == "frame" and n != 1:
        raise _Rejected("unsupported_image_count", f"generation_type frame needs 1 image, got {n}")
    if gen_type == "reference" and n not in (1, 3):
        raise _Rejected(
            "unsupported_image_count", f"generation_type reference needs 1 or 3 images, got {n}"
        )
    if n not in (0, 1, 3):
        raise _Rejected("unsupported_image_count", f"unsupported image count {n}")
    if len(videos) > 1:
        raise _Rejected("unsupported_video_count", f"unsupported video count {len(videos)}")
    return OMNI, seconds, resolution.lower(), 1


def _validate_veo(model: str, body: dict[str, Any]) -> tuple[str, int, str, int]:
    bad = "invalid_request_error"
    duration = body.get("duration", 8)
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        raise _Rejected(bad, "duration must be a number")
    if duration not in (4, 6, 8):
        raise _Rejected("invalid_duration", f"invalid duration {duration}, must be one of 4/6/8")
    resolution = body.get("resolution", "720p")
    if resolution not in ("720p", "1080p", "4K"):
        raise _Rejected(
            "invalid_resolution", f"invalid resolution {resolution}, must be one of 720p/1080p/4K"
        )
    aspect = body.get("aspect_ratio")
    if aspect is not None and aspect not in ("16:9", "9:16"):
        raise _Rejected(bad, f"invalid aspect_ratio {aspect}")
    first = body.get("first_frame_image")
    last = body.get("last_frame_image")
    for name, value in (("first_frame_image", first), ("last_frame_image", last)):
        if value is not None and not _is_http_url(value):
            raise _Rejected(bad, f"{name} must be an http(s) URL")
    if last is not None and first is None:
        raise _Rejected(bad, "last_frame_image requires first_frame_image")
    neg = body.get("negative_prompt")
    if neg is not None and not isinstance(neg, str):
        raise _Rejected(bad, "negative_prompt must be a string")
    seed = body.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= 4294967295):
        raise _Rejected(bad, "seed must be an integer in 0..4294967295")
    samples = body.get("sample_count", 1)
    if not (_is_int(samples) and 1 <= samples <= 4):
        raise _Rejected(bad, "sample_count must be an integer in 1..4")
    audio = body.get("generate_audio")
    if audio is not None and not isinstance(audio, bool):
        raise _Rejected(bad, "generate_audio must be a boolean")
    person = body.get("person_generation")
    if person is not None and person not in ("allow_adult", "disallow"):
        raise _Rejected(bad, f"invalid person_generation {person}")
    resize = body.get("resize_mode")
    if resize is not None and resize not in ("pad", "crop"):
        raise _Rejected(bad, f"invalid resize_mode {resize}")
    if "enhance_prompt" in body and body["enhance_prompt"] is not True:
        raise _Rejected(bad, "enhance_prompt can only be true; omit it otherwise")
    return model, int(duration), resolution.lower(), samples


def _validate_sora(model: str, body: dict[str, Any]) -> tuple[str, int, str, int]:
    bad = "invalid_request_error"
    duration = body.get("duration", 4)
    if not (_is_int(duration) and duration in (4, 8, 12, 16, 20)):
        raise _Rejected(
            "invalid_duration", f"invalid duration {duration}, must be one of 4/8/12/16/20"
        )
    allowed = ("720p",) if model == "sora-2" else ("720p", "1024p", "1080p")
    resolution = body.get("resolution", "720p")
    if resolution not in allowed:
        raise _Rejected(
            "invalid_resolution",
            f"invalid resolution {resolution} for {model}, must be one of {'/'.join(allowed)}",
        )
    aspect = body.get("aspect_ratio")
    if aspect is not None and aspect not in ("16:9", "9:16", "landscape", "portrait"):
        raise _Rejected(bad, f"invalid aspect_ratio {aspect}")
    images = _url_list(body, "image_urls")
    if len(images) > 1:
        raise _Rejected("unsupported_image_count", f"at most 1 image, got {len(images)}")
    return model, duration, resolution, 1


def _price(model: str, resolution: str, seconds: int, samples: int) -> float:
    per_second = PRICE_PER_SECOND[model][resolution]
    return round(per_second * seconds * samples, 4)


def _new_task_id() -> str:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "task_" + "".join(secrets.choice(alphabet) for _ in range(26))


class FakeApimart:
    """An in-process APIMart: build it, serve ``fake.app``, steer it from the test."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        default_plan: FakeTaskPlan | None = None,
        public_base_url: str | None = None,
        balance: float = 100.0,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.api_key = api_key
        self.time_scale = time_scale
        self.clock = clock
        self.default_plan = default_plan or FakeTaskPlan()
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.balance = balance
        self.used_balance = 0.0

        self.submits: list[dict[str, Any]] = []
        self.submit_attempts: list[Any] = []
        self.requests: list[tuple[str, str]] = []
        #: The same requests with their time and client, for tests of several workers.
        self.request_log: list[RequestRecord] = []
        self.tasks: dict[str, FakeTask] = {}
        self.uploads: dict[str, bytes] = {}
        self.upload_types: dict[str, str] = {}
        self.callbacks_sent: list[CallbackAttempt] = []

        self._plans: deque[FakeTaskPlan] = deque()
        self._injections: dict[str, deque[_Injection]] = {e: deque() for e in ENDPOINTS}
        self._heap: list[tuple[float, str]] = []
        self._t0 = clock()
        self._epoch0 = time.time()
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.app = self.make_app()

    # ------------------------------------------------------------------ controls

    def now(self) -> float:
        """Simulated unix time."""
        return self._epoch0 + (self.clock() - self._t0) * self.time_scale

    def plan_next(self, plan: FakeTaskPlan) -> None:
        """The next accepted submit follows ``plan`` (plans queue up in order)."""
        self._plans.append(plan)

    def inject(
        self,
        endpoint: str,
        status: int,
        *,
        error_type: str | None = None,
        times: int = 1,
        body: str | bytes | None = None,
        delay: float = 0.0,
        retry_after: float | str | None = None,
        accept: bool = False,
        huge: int = 0,
        truncate: bool = False,
    ) -> None:
        """Make the next ``times`` calls to ``endpoint`` misbehave.

        ``endpoint`` is one of ``submit``, ``task``, ``upload``, ``balance``. The call
        sleeps ``delay`` real seconds, then answers ``status`` with the documented
        error body (or ``body`` verbatim). ``status=200`` without ``body`` only delays
        and then handles the request normally. ``accept=True`` (submit only) processes
        the submit normally first - creating and billing the task - and then answers
        with the injected status: "the server got it, but the answer was lost".
        ``huge=N`` streams an N-byte body (chunked, no length: memory stays small here);
        ``truncate=True`` announces the body's length, sends half, and drops the connection.
        ``retry_after`` is sent as the Retry-After header: a number as seconds, a string
        verbatim (an HTTP date, "nan", "-5": what a broken server might send).
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}")
        raw = body.encode() if isinstance(body, str) else body
        self._injections[endpoint].append(
            _Injection(status, error_type, times, raw, delay, retry_after, accept, huge, truncate)
        )

    def complete_now(self, task_id: str) -> None:
        """Force a task to complete at the current simulated time."""
        task = self.tasks[task_id]
        if task.final_status is None:
            self._finalize(task, "completed", self.now())

    def fail_now(self, task_id: str, message: str = "upstream timeout") -> None:
        """Force a task to fail at the current simulated time, where its progress is."""
        task = self.tasks[task_id]
        if task.final_status is None:
            now = self.now()
            task.final_progress = self._progress(task, now)
            task.error_message = message
            self._finalize(task, "failed", now)

    # ------------------------------------------------------------------ app

    def make_app(self) -> web.Application:
        """Build the aiohttp application (routes, request log, background ticker)."""
        app = web.Application(middlewares=[self._record_middleware])
        app.router.add_post("/v1/videos/generations", self._h_submit)
        app.router.add_get("/v1/tasks/{task_id}", self._h_task)
        app.router.add_post("/v1/uploads/images", self._h_upload)
        app.router.add_get("/v1/balance", self._h_balance)
        app.router.add_get("/v1/user/balance", self._h_balance)
        app.router.add_get("/files/{name}", self._h_file)
        app.router.add_get("/uploads/{name}", self._h_uploaded)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self._session = aiohttp.ClientSession()
        ticker = asyncio.create_task(self._ticker())
        try:
            yield
        finally:
            ticker.cancel()
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(ticker, *self._background, return_exceptions=True)
            await self._session.close()
            self._session = None

    @web.middleware
    async def _record_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        agent = request.headers.get("User-Agent", "")[:200]
        self.request_log.append(
            RequestRecord(time.monotonic(), request.method, request.path, agent)
        )
        return await handler(request)

    async def _ticker(self) -> None:
        """Finish tasks whose end time passed, so webhooks fire without polling.

        A heap of end times keeps each tick O(finished tasks), not O(open tasks).
        """
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            try:
                self._expire_due()
            except Exception:  # pragma: no cover - keep ticking whatever happens
                log.exception("fake APIMart ticker failed")

    def _expire_due(self) -> None:
        now = self.now()
        while self._heap and self._heap[0][0] <= now:
            _, task_id = heapq.heappop(self._heap)
            task = self.tasks.get(task_id)
            if task is not None:
                self._refresh(task, now)

    # ------------------------------------------------------------------ helpers

    def _authorized(self, request: web.Request) -> bool:
        """The configured key; with `api_key=None`, any non-empty Bearer key (`reelbot fake-api`)."""
        header = request.headers.get("Authorization", "")
        if self.api_key is None:
            scheme, _, key = header.partition(" ")
            return scheme == "Bearer" and bool(key.strip())
        return header == f"Bearer {self.api_key}"

    def _base(self, request: web.Request) -> str:
        return self.public_base_url or f"{request.scheme}://{request.host}"

    def _take_injection(self, endpoint: str) -> _Injection | None:
        queue = self._injections[endpoint]
        if not queue:
            return None
        inj = queue[0]
        inj.times -= 1
        if inj.times <= 0:
            queue.popleft()
        return inj

    async def _injected_response(self, inj: _Injection, request: web.Request) -> web.StreamResponse:
        if inj.delay > 0:
            await asyncio.sleep(inj.delay)
        if inj.huge or inj.truncate:
            return await self._broken_body(inj, request)
        headers = {}
        ra = inj.retry_after
        if isinstance(ra, str):
            headers["Retry-After"] = ra
        elif ra is not None:
            headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        if inj.body is not None:
            return web.Response(
                status=inj.status, body=inj.body, content_type="application/json", headers=headers
            )
        etype = inj.error_type or DEFAULT_ERROR_TYPES.get(inj.status, "server_error")
        resp = _err(inj.status, f"injected {inj.status} {etype}", etype)
        resp.headers.update(headers)
        return resp

    @staticmethod
    async def _broken_body(inj: _Injection, request: web.Request) -> web.StreamResponse:
        """A body that is endless-looking (``huge``) or cut off (``truncate``)."""
        body = inj.body or b'{"code": 200, "data": {"id": "x", "status": "processing"}}'
        resp = web.StreamResponse(status=inj.status)
        resp.content_type = "application/json"
        if inj.truncate:
            resp.content_length = len(body) * 2
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"[" * 1024 * 64
        sent = 0
        try:
            while sent < inj.huge:
                piece = chunk[: inj.huge - sent]
                await resp.write(piece)
                sent += len(piece)
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client stopped reading, as it should
        return resp

    @staticmethod
    async def _drain(request: web.Request) -> None:
        while await request.content.readany():
            pass

    def _shape(self, task: FakeTask) -> None:
        digest = hashlib.sha256(task.task_id.encode()).digest()
        task.wobble = 0.3 + 0.6 * digest[0] / 255  # < 1 keeps the curve monotonic
        task.waves = 1 + digest[1] % 4
        task.gamma = 0.6 + 0.8 * digest[2] / 255
        task.fail_cap = 15 + digest[3] % 70

    def _progress(self, task: FakeTask, now: float) -> int:
        """Progress while running: 0 while pending, then a monotonic uneven curve < 100."""
        total = task.ends_at - task.created
        if total <= 0:
            return 99
        x = (now - task.created) / total
        if x < 0.1:
            return 0
        u = min(1.0, (x - 0.1) / 0.9) ** task.gamma
        k = 2 * math.pi * task.waves
        g = u + task.wobble * math.sin(k * u) / k  # derivative 1 + wobble*cos(...) > 0
        cap = task.fail_cap if task.plan.fail else 99
        return max(1, min(cap, int(cap * g)))

    def _refresh(self, task: FakeTask, now: float) -> None:
        if task.final_status is None and now >= task.ends_at:
            if task.plan.fail:
                task.final_progress = self._progress(task, task.ends_at)
                task.error_message = task.plan.error_message
                self._finalize(task, "failed", task.ends_at)
            else:
                self._finalize(task, "completed", task.ends_at)

    def _finalize(self, task: FakeTask, status: str, at: float) -> None:
        task.final_status = status
        task.finished_at = at
        if status == "completed":
            task.final_progress = 100
            self.balance = round(self.balance - task.cost, 6)
            self.used_balance = round(self.used_balance + task.cost, 6)
        if task.webhook:
            self._spawn(self._deliver_webhook(task))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop: no delivery possible
            coro.close()
            return
        task = loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def status_payload(self, task: FakeTask, now: float | None = None) -> dict[str, Any]:
        """The JSON a ``GET /v1/tasks/{id}`` answers (and a webhook carries)."""
        now = self.now() if now is None else now
        self._refresh(task, now)
        data: dict[str, Any] = {
            "id": task.task_id,
            "created": int(task.created),
            "estimated_time": task.plan.estimated_time,
        }
        if task.final_status is None:
            progress = self._progress(task, now)
            data["status"] = (
                "pending"
                if (now - task.created) < 0.1 * (task.ends_at - task.created)
                else "processing"
            )
            data["progress"] = progress
        else:
            assert task.finished_at is not None
            data["status"] = task.final_status
            data["progress"] = task.final_progress
            data["completed"] = int(task.finished_at)
            data["actual_time"] = round(task.finished_at - task.created)
            if task.final_status == "completed":
                data["cost"] = task.cost
                data["credits_cost"] = round(task.cost * CREDITS_PER_MONEY, 4)
                url = f"{task.base_url}/files/{task.task_id}.mp4"
                expires = int(task.finished_at) + VIDEO_LIFETIME_S
                data["result"] = {
                    "videos": [
                        {"url": [url if i == 0 else f"{url[:-4]}_{i}.mp4"], "expires_at": expires}
                        for i in range(task.samples)
                    ]
                }
            else:
                data["cost"] = 0
                data["credits_cost"] = 0
                data["error"] = {"message": task.error_message, "code": "task_failed"}
        return {"code": 200, "data": data}

    async def _deliver_webhook(self, task: FakeTask) -> None:
        """POST the status answer to ``<webhook>/callback``; retry up to 3 times."""
        assert task.webhook is not None
        url = task.webhook.rstrip("/") + "/callback"
        payload = self.status_payload(task)
        timeout = aiohttp.ClientTimeout(total=max(0.5, WEBHOOK_TIMEOUT_S / self.time_scale))
        for attempt in range(len(WEBHOOK_RETRY_DELAYS_S) + 1):
            if attempt:
                await asyncio.sleep(WEBHOOK_RETRY_DELAYS_S[attempt - 1] / self.time_scale)
            session = self._session
            if session is None or session.closed:
                return
            try:
                async with session.post(url, json=payload, timeout=timeout) as resp:
                    await resp.read()
                    self.callbacks_sent.append(CallbackAttempt(url, task.task_id, resp.status))
                    if 200 <= resp.status < 300:
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.callbacks_sent.append(
                    CallbackAttempt(url, task.task_id, None, type(exc).__name__)
                )

    # ------------------------------------------------------------------ handlers

    async def _h_submit(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        self.submit_attempts.append(
            body if body is not None else {"__raw__": raw.decode("utf-8", "replace")}
        )
        inj = self._take_injection("submit")
        if inj is None:
            if not self._authorized(request):
                return _err(401, "invalid API key", "authentication_error")
            return self._accept_submit(request, body)
        passthrough = inj.passthrough
        if inj.accept:
            # The server takes the request (task created, billed later), but the
            # answer is delayed and/or replaced: "accepted, answer lost".
            response = (
                self._accept_submit(request, body)
                if self._authorized(request)
                else _err(401, "invalid API key", "authentication_error")
            )
            if passthrough:
                await asyncio.sleep(inj.delay)
                return response
            return await self._injected_response(inj, request)
        if passthrough:
            await asyncio.sleep(inj.delay)
            if not self._authorized(request):
                return _err(401, "invalid API key", "authentication_error")
            return self._accept_submit(request, body)
        return await self._injected_response(inj, request)

    def _accept_submit(self, request: web.Request, body: Any) -> web.Response:
        if not isinstance(body, dict):
            return _err(400, "request body must be a JSON object", "invalid_request_error")
        try:
            model, seconds, resolution, samples = _validate(body)
        except _Rejected as rej:
            return _err(400, rej.message, rej.error_type)
        cost = _price(model, resolution, seconds, samples)
        if self.balance <= 0 or self.balance < cost:
            return _err(402, "insufficient balance", "payment_required")
        webhook = body.get("webhook")
        if webhook is not None and not _is_http_url(webhook):
            return _err(400, "webhook must be an http(s) URL", "invalid_request_error")
        plan = self._plans.popleft() if self._plans else self.default_plan
        now = self.now()
        task = FakeTask(
            task_id=_new_task_id(),
            model=model,
            body=body,
            plan=plan,
            created=now,
            ends_at=now + max(0.0, plan.duration_s),
            seconds=seconds,
            resolution=resolution,
            samples=samples,
            cost=cost,
            base_url=self._base(request),
            webhook=webhook,
        )
        self._shape(task)
        self.tasks[task.task_id] = task
        self.submits.append(body)
        heapq.heappush(self._heap, (task.ends_at, task.task_id))
        return web.json_response(
            {"code": 200, "data": [{"status": "submitted", "task_id": task.task_id}]}
        )

    async def _gate(self, endpoint: str, request: web.Request) -> web.StreamResponse | None:
        """Injected faults first, then the API key: the answer to give, or None to go on.

        A refused request's body is read to the end first, so the client sees the answer
        rather than a reset connection (it matters for large uploads).
        """
        inj = self._take_injection(endpoint)
        if inj is not None:
            if inj.passthrough:
                await asyncio.sleep(inj.delay)
            else:
                await self._drain(request)
                return await self._injected_response(inj, request)
        if not self._authorized(request):
            await self._drain(request)
            return _err(401, "invalid API key", "authentication_error")
        return None

    async def _h_task(self, request: web.Request) -> web.StreamResponse:
        if (refusal := await self._gate("task", request)) is not None:
            return refusal
        task = self.tasks.get(request.match_info["task_id"])
        if task is None:
            return _err(404, "task not found", "not_found_error")
        return web.json_response(self.status_payload(task))

    async def _h_balance(self, request: web.Request) -> web.StreamResponse:
        if (refusal := await self._gate("balance", request)) is not None:
            return refusal
        return web.json_response(
            {
                "success": True,
                "remain_balance": round(self.balance, 6),
                "used_balance": round(self.used_balance, 6),
                "unlimited_quota": False,
            }
        )

    async def _h_upload(self, request: web.Request) -> web.StreamResponse:
        if (refusal := await self._gate("upload", request)) is not None:
            return refusal
        if not request.content_type.startswith("multipart/"):
            await self._drain(request)
            return _err(400, "multipart/form-data with a 'file' field is required")
        reader = await request.multipart()
        data: bytearray | None = None
        size = 0
        filename: str | None = None
        declared: str | None = None
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, aiohttp.BodyPartReader):
                continue  # nested multipart: not a file field
            if part.name != "file" or data is not None:
                await part.release()
                continue
            filename = part.filename
            declared = part.headers.get(aiohttp.hdrs.CONTENT_TYPE)
            data = bytearray()
            while chunk := await part.read_chunk(256 * 1024):
                size += len(chunk)
                if size <= MAX_UPLOAD_BYTES:  # keep reading past the limit, store nothing
                    data += chunk
        if data is None or size == 0:
            return _err(400, "no file uploaded (multipart field 'file')")
        if size > MAX_UPLOAD_BYTES:
            return _err(413, f"file too large: {size} bytes, limit {MAX_UPLOAD_BYTES}")
        sniffed = _sniff_image(bytes(data[:16]))
        declared_type = (declared or "").split(";")[0].strip().lower()
        if declared_type == "image/jpg":
            declared_type = "image/jpeg"
        content_type = sniffed or (declared_type if declared_type in IMAGE_TYPES else None)
        if content_type is None:
            return _err(400, "unsupported image format; use JPEG, PNG, WebP or GIF")
        name = f"upl_{secrets.token_hex(8)}{IMAGE_TYPES[content_type]}"
        self.uploads[name] = bytes(data)
        self.upload_types[name] = content_type
        return web.json_response(
            {
                "url": f"{self._base(request)}/uploads/{name}",
                "filename": filename or name,
                "content_type": content_type,
                "bytes": size,
                "created_at": int(self.now()),
            }
        )

    async def _h_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        stem = name.removesuffix(".mp4").split("_")
        task_id = "_".join(stem[:2])
        task = self.tasks.get(task_id)
        if not name.endswith(".mp4") or task is None:
            return _err(404, "file not found", "not_found_error")
        self._refresh(task, self.now())
        if task.final_status != "completed":
            return _err(404, "file not found", "not_found_error")
        return web.Response(body=FAKE_MP4, content_type="video/mp4")

    async def _h_uploaded(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        data = self.uploads.get(name)
        if data is None:
            return _err(404, "file not found", "not_found_error")
        return web.Response(body=data, content_type=self.upload_types[name])


async def serve(host: str = "127.0.0.1", port: int = 8765, **opts: Any) -> None:
    """Serve a :class:`FakeApimart` until cancelled.

    ``opts`` are passed to :class:`FakeApimart` (``api_key``, ``time_scale``,
    ``default_plan``, ``public_base_url``, ``balance``, ``clock``). Use this from
    code that already runs an event loop; :func:`run_fake_api` is the blocking form.
    """
    fake = FakeApimart(**opts)
    runner = web.AppRunner(fake.app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("fake APIMart listening on http://%s:%s", host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_fake_api(
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str | None = None,
    time_scale: float = 1.0,
    *,
    public_base_url: str | None = None,
    balance: float = 100.0,
    out: TextIO | None = None,
) -> None:
    """Run a fake APIMart in the foreground (blocking) - used by ``reelbot fake-api``.

    Prints the base URL and the key to point reelbot at first (a newcomer cannot guess them).
    ``api_key=None`` accepts any non-empty key; a given key is the only one accepted.
    ``time_scale`` speeds simulated time up (100 makes a four-minute task finish in 2.4 s).
    ``public_base_url`` overrides the host used in result/upload URLs (e.g. when the bot
    reaches the fake through another name).
    """
    api_key = api_key or None  # `--api-key ""` is no key: accept any
    fake = FakeApimart(
        api_key=api_key, time_scale=time_scale, public_base_url=public_base_url, balance=balance
    )
    out = out or sys.stdout
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base = public_base_url or f"http://{shown_host}:{port}"
    key = api_key if api_key is not None else "any-non-empty-key"
    accepted = "only this key" if api_key is not None else "any non-empty key is accepted"
    print(
        f"stand-in APIMart on {base} (no real videos, no real cost; "
        f"time scale {time_scale:g}x, balance {balance:g})\n"
        "point reelbot at it with:\n"
        f"  APIMART_BASE_URL={base}\n"
        f"  APIMART_API_KEY={key}    ({accepted})\n"
        "Ctrl-C stops it.",
        file=out,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(fake.app, host=host, port=port, print=None, shutdown_timeout=1.0)
