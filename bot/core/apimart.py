"""Async client for APIMart's video API (submit, poll, upload, balance).

Design notes (the *why*):

* The ``aiohttp.ClientSession`` is injected and never closed here: the process owns
  one session for its lifetime.
* Reads (``get_task``, ``balance``, ``upload_image``) are safe to repeat, so they are
  retried on 429, 5xx, connection errors and timeouts with exponential backoff and
  jitter, honouring ``Retry-After``.
* ``submit`` costs money and APIMart has no idempotency key: a second POST is a second
  charge. It is retried only when the request provably never reached the server
  (could not connect) or was refused with 429. Anything that may have reached the
  server - a timeout, a 5xx, a dropped connection, an unreadable 200 - raises
  :class:`SubmitOutcomeUnknown` at once, so the caller can tell the user instead of
  paying twice.
* The API key lives in a ``SecretStr`` and only enters the ``Authorization`` header of
  each request. Exception messages name the method and path, never headers; API error
  text is scrubbed of the key just in case; ``repr(client)`` omits it.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr

from bot.core.catalog import UPLOAD_LIFETIME_S
from bot.core.deadline import time_left
from bot.core.fetch import resource_error
from bot.core.job import plausible_duration, plausible_money, plausible_time
from bot.core.scrub import register_secret, scrub

__all__ = [
    "ApiUnreachable",
    "ApimartClient",
    "ApimartError",
    "AuthenticationFailed",
    "Balance",
    "InvalidRequest",
    "PaymentRequired",
    "PermissionDenied",
    "ProtocolError",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "SubmitOutcomeUnknown",
    "TaskInfo",
    "TaskNotFound",
    "UploadedImage",
]

log = logging.getLogger("bot.core.apimart")

SUBMIT_PATH = "/v1/videos/generations"
UPLOAD_PATH = "/v1/uploads/images"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
_STATUS_ALIASES = {
    "complete": "completed",
    "succeeded": "completed",
    "success": "completed",
    "failure": "failed",
    "error": "failed",
    "canceled": "cancelled",
}
#: The largest answer read from APIMart (bytes). Task and upload answers are a few KB; a proxy
#: that streams gigabytes must not take the process's memory with it.
MAX_ANSWER_BYTES = 1024 * 1024
#: Deeper JSON than this is refused as unreadable (it is never a real answer, and Python's
#: recursive JSON handling would otherwise end in a RecursionError somewhere downstream).
MAX_JSON_DEPTH = 64
_READ_CHUNK = 64 * 1024
#: A Retry-After longer than this (seconds) is read as this: `1e12` or a date in the year 9999
#: is a broken server, and a sane number keeps the arithmetic downstream sane.
MAX_RETRY_AFTER = 86400.0


# --------------------------------------------------------------------------- errors


class ApimartError(Exception):
    """Base of every client error. ``str(e)`` is a short sentence safe to show/log."""

    default_summary: ClassVar[str] = "APIMart request failed"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        summary: str | None = None,
        *,
        status: int | None = None,
        error_type: str | None = None,
        api_message: str | None = None,
        method: str | None = None,
        path: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        self.summary = summary or self.default_summary
        self.status = status
        self.error_type = error_type
        self.api_message = api_message
        self.method = method
        self.path = path
        self.retryable = self.default_retryable if retryable is None else retryable
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.summary
        tags = [str(t) for t in (self.status, self.error_type) if t is not None]
        if tags:
            text += f" ({' '.join(tags)})"
        if self.api_message:
            text += f": {self.api_message}"
        if self.method and self.path:
            text += f" [{self.method} {self.path}]"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class InvalidRequest(ApimartError):
    """400 (and other non-retryable 4xx such as 413): the request was refused, not billed."""

    default_summary = "APIMart rejected the request"


class AuthenticationFailed(ApimartError):
    """401: the API key is wrong; the operator must fix the configuration."""

    default_summary = "APIMart did not accept the API key"


class PaymentRequired(ApimartError):
    """402: the account balance is too low."""

    default_summary = "the APIMart balance is too low"


class PermissionDenied(ApimartError):
    """403: this key may not use this model or endpoint."""

    default_summary = "this APIMart key is not allowed to do that"


class TaskNotFound(ApimartError):
    """404: APIMart does not know the task (anymore)."""

    default_summary = "APIMart does not know this task"


class RateLimited(ApimartError):
    """429: too many requests; ``retry_after`` (seconds) when the server said so."""

    default_summary = "APIMart is rate-limiting requests"
    default_retryable = True

    def __init__(self, summary: str | None = None, *, retry_after: float | None = None, **kw: Any):
        self.retry_after = retry_after
        super().__init__(summary, **kw)


class ServerError(ApimartError):
    """5xx: trouble on APIMart's side or upstream."""

    default_summary = "APIMart had a server error"
    default_retryable = True


class ProtocolError(ApimartError):
    """The answer was not JSON or did not have the documented shape."""

    default_summary = "APIMart sent an answer that could not be understood"


class ApiUnreachable(ApimartError):
    """Could not talk to APIMart: connection refused, DNS, timeout, dropped connection.

    ``request_sent`` is False only when the request provably never left (could not
    connect); otherwise the server may have received it.
    """

    default_summary = "could not reach APIMart"
    default_retryable = True

    def __init__(self, summary: str | None = None, *, request_sent: bool = True, **kw: Any):
        self.request_sent = request_sent
        super().__init__(summary, **kw)


class SubmitOutcomeUnknown(ApimartError):
    """A submit may have been accepted and billed, but its answer was lost.

    Never resubmit automatically: check the APIMart dashboard / tell the user.
    ``cause`` is the underlying error (timeout, 5xx, unreadable answer).
    """

    default_summary = "the video request may or may not have been accepted (and billed) by APIMart"

    def __init__(
        self, summary: str | None = None, *, cause: ApimartError | None = None, **kw: Any
    ) -> None:
        self.cause = cause
        super().__init__(summary, **kw)

    def _render(self) -> str:
        text = self.summary
        if self.method and self.path:
            text += f" [{self.method} {self.path}]"
        if self.cause is not None:
            tags = [str(t) for t in (self.cause.status, self.cause.error_type) if t is not None]
            text += f"; cause: {self.cause.summary}"
            if tags:
                text += f" ({' '.join(tags)})"
        return text


_BY_STATUS: dict[int, type[ApimartError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    402: PaymentRequired,
    403: PermissionDenied,
    404: TaskNotFound,
    429: RateLimited,
}
_BY_TYPE: dict[str, type[ApimartError]] = {
    "invalid_request_error": InvalidRequest,
    "invalid_duration": InvalidRequest,
    "invalid_resolution": InvalidRequest,
    "unsupported_image_count": InvalidRequest,
    "unsupported_video_count": InvalidRequest,
    "authentication_error": AuthenticationFailed,
    "payment_required": PaymentRequired,
    "insufficient_quota": PaymentRequired,
    "permission_error": PermissionDenied,
    "not_found_error": TaskNotFound,
    "rate_limit_error": RateLimited,
    "server_error": ServerError,
    "bad_gateway": ServerError,
}


def _class_for(status: int | None, error_type: str | None) -> type[ApimartError]:
    if status is not None:
        if status in _BY_STATUS:
            return _BY_STATUS[status]
        if status >= 500:
            return ServerError
        if 400 <= status < 500:
            return InvalidRequest
    if error_type and error_type in _BY_TYPE:
        return _BY_TYPE[error_type]
    return ApimartError  # unclassified: not retried; a submit treats it as "maybe accepted"


# --------------------------------------------------------------------------- results


def _num(value: Any) -> float | None:
    """A finite number from an int/float/numeric string, else None (tolerant parsing)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().rstrip("%"))
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


#: What a task id may look like ("task_01K…" in the docs). It is echoed into log lines, the
#: terminal, a URL path and a 128-character column, so control characters, spaces and
#: kilobytes are refused: such an answer is unreadable, and the submit's outcome unknown.
TASK_ID_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def normalise_status(value: Any) -> str:
    """Lower-case status; synonyms of completed/failed/cancelled folded into those."""
    status = str(value).strip().lower()
    return _STATUS_ALIASES.get(status, status)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One answer of ``GET /v1/tasks/{id}``, parsed tolerantly.

    ``status`` is ``completed``/``failed``/``cancelled`` when terminal; any other value
    (``pending``, ``processing``, ``submitted``, something new) means still running.
    """

    task_id: str
    status: str
    progress: int | None
    estimated_time: float | None
    actual_time: float | None
    created: float | None
    completed: float | None
    cost: float | None
    credits_cost: float | None
    video_urls: tuple[str, ...]
    expires_at: float | None
    error_code: str | None
    error_message: str | None
    raw: dict[str, Any] = field(compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def running(self) -> bool:
        return not self.terminal

    @classmethod
    def from_api(cls, data: Mapping[str, Any], *, task_id: str | None = None) -> TaskInfo:
        """Build from the ``data`` object; raises :class:`ProtocolError` if unusable."""
        if not isinstance(data, Mapping):
            raise ProtocolError(api_message="task data is not an object")
        status_raw = data.get("status")
        if not isinstance(status_raw, str) or not status_raw.strip():
            raise ProtocolError(api_message="task answer has no status")
        tid = _str(data.get("id")) or _str(data.get("task_id")) or task_id
        if not tid:
            raise ProtocolError(api_message="task answer has no id")

        progress_num = _num(data.get("progress"))
        progress = None if progress_num is None else max(0, min(100, int(progress_num)))

        urls: list[str] = []
        expiries: list[float] = []
        result = data.get("result")
        if isinstance(result, Mapping):
            videos = result.get("videos")
            if isinstance(videos, Mapping):
                videos = [videos]
            if isinstance(videos, list):
                for video in videos:
                    if isinstance(video, str):
                        urls.append(video)
                        continue
                    if not isinstance(video, Mapping):
                        continue
                    url = video.get("url")
                    if isinstance(url, str):
                        urls.append(url)
                    elif isinstance(url, list):
                        urls.extend(u for u in url if isinstance(u, str))
                    exp = _num(video.get("expires_at"))
                    if exp is not None:
                        expiries.append(exp)
            for key in ("url", "video_url"):  # flatter shapes seen on other models
                if isinstance(result.get(key), str):
                    urls.append(result[key])
        urls = [u.strip() for u in urls if u.strip()]

        error_code: str | None = None
        error_message: str | None = None
        error = data.get("error")
        if isinstance(error, Mapping):
            error_code = scrub(_str(error.get("code")), limit=64)
            error_message = scrub(_str(error.get("message")))
        elif isinstance(error, str):
            error_message = scrub(_str(error))

        return cls(
            task_id=tid,
            status=normalise_status(status_raw),
            progress=progress,
            estimated_time=plausible_duration(_num(data.get("estimated_time"))),
            actual_time=plausible_duration(_num(data.get("actual_time"))),
            created=plausible_time(_num(data.get("created"))),
            completed=plausible_time(_num(data.get("completed"))),
            cost=plausible_money(_num(data.get("cost"))),
            credits_cost=plausible_money(_num(data.get("credits_cost"))),
            video_urls=tuple(dict.fromkeys(urls)),
            expires_at=plausible_time(min(expiries)) if expiries else None,
            error_code=error_code,
            error_message=error_message,
            raw=dict(data),
        )


@dataclass(frozen=True, slots=True)
class UploadedImage:
    """Answer of ``POST /v1/uploads/images``.

    ``expires_at`` is the server's value if given, else ``created_at`` + the documented
    `UPLOAD_LIFETIME_S` (None when neither is known).
    """

    url: str
    bytes: int | None
    content_type: str | None
    filename: str | None
    created_at: float | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class Balance:
    """Answer of the balance endpoints; ``remaining`` is None when unlimited."""

    remaining: float | None
    used: float | None
    unlimited: bool


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for retried calls.

    ``attempts`` counts the first try. Delay n is ``min(max_delay, base_delay * 2**(n-1))``
    reduced by up to ``jitter`` (a fraction) at random so that many pollers do not retry
    in lockstep. A ``Retry-After`` from the server wins when longer; one longer than
    ``max_retry_after`` is not slept inside the call - the :class:`RateLimited` is raised
    so the caller can reschedule instead of blocking. The sleeps of one call add up to at most
    ``max_retry_after`` too, and none ends past the caller's deadline
    (`bot.core.deadline.deadline_in`): the error is raised instead (hostile finding R3).
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1))
        backoff *= 1.0 - self.jitter * random.random()
        if retry_after is not None:
            return max(backoff, retry_after)
        return backoff


async def _read_bounded(resp: aiohttp.ClientResponse, method: str, path: str) -> bytes:
    """The answer's body, refused as "too large" past MAX_ANSWER_BYTES (memory stays small)."""
    too_large = ProtocolError(
        api_message=f"answer too large (over {MAX_ANSWER_BYTES // 1024} KiB)",
        status=resp.status,
        method=method,
        path=path,
    )
    if resp.content_length is not None and resp.content_length > MAX_ANSWER_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(_READ_CHUNK):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _shallow(value: Any, limit: int) -> bool:
    """True when `value` nests at most `limit` levels (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date).

    An outside value, so never trusted: garbage ("nan", "inf", an unreadable date) is None, a
    negative or past value 0, anything longer than MAX_RETRY_AFTER is clamped to it. How long
    to actually wait is the caller's decision (`RetryPolicy.max_retry_after`, the limiter's
    pause cap, the job's deadline); this only keeps the number sane.
    """
    if not value:
        return None
    value = value.strip()[:64]
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
            seconds = when.timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


# --------------------------------------------------------------------------- client


class ApimartClient:
    """Thin, typed, retrying client. See the module docstring for the retry rules."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | SecretStr,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_rate_limited: Callable[[float | None], None] | None = None,
    ) -> None:
        base = base_url.strip().rstrip("/")
        if base.endswith("/v1"):  # tolerate a base URL configured with the version
            base = base[:-3]
        if not base.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        self._session = session
        self._base_url = base
        self._key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        if not self._key.get_secret_value():
            raise ValueError("api_key is empty")
        register_secret(self._key.get_secret_value())
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._on_rate_limited = on_rate_limited

    def __repr__(self) -> str:
        return f"ApimartClient(base_url={self._base_url!r})"

    @property
    def base_url(self) -> str:
        return self._base_url

    # ------------------------------------------------------------------ public API

    async def submit(self, payload: Mapping[str, Any]) -> str:
        """POST a generation request; return the task id.

        Raises :class:`SubmitOutcomeUnknown` when the request may have been accepted.
        """
        method, path = "POST", SUBMIT_PATH
        body = dict(payload)
        attempt = 0
        slept = 0.0
        while True:
            attempt += 1
            try:
                answer = await self._exchange(method, path, json_body=body)
                return self._task_id_from_submit(answer, method, path)
            except (RateLimited, ApiUnreachable) as exc:
                provably_unsent = isinstance(exc, RateLimited) or not exc.request_sent
                if not provably_unsent:
                    log.warning("submit outcome unknown after %s", exc.summary)
                    raise SubmitOutcomeUnknown(
                        cause=exc, status=exc.status, method=method, path=path
                    ) from exc
                if not exc.retryable:  # e.g. a malformed base URL: nothing was sent
                    raise
                slept += await self._backoff_or_raise(exc, attempt, method, path, slept)
            except (ServerError, ProtocolError) as exc:
                log.warning("submit outcome unknown after %s", exc)
                raise SubmitOutcomeUnknown(
                    cause=exc, status=exc.status, method=method, path=path
                ) from exc
            except ApimartError as exc:
                if type(exc) is ApimartError:  # unclassified: cannot rule out acceptance
                    raise SubmitOutcomeUnknown(
                        cause=exc, status=exc.status, method=method, path=path
                    ) from exc
                log.debug("submit refused: %s", exc)
                raise

    async def get_task(self, task_id: str) -> TaskInfo:
        """GET the status of one task (retried on transient failures)."""
        if not task_id or not task_id.strip():
            raise ValueError("task_id is empty")
        path = "/v1/tasks/" + quote(task_id.strip(), safe="")
        answer = await self._read("GET", path)
        data = answer.get("data")
        if isinstance(data, list) and len(data) == 1:  # tolerate a one-element list
            data = data[0]
        if not isinstance(data, Mapping):
            raise ProtocolError(api_message="answer has no data object", method="GET", path=path)
        try:
            return TaskInfo.from_api(data, task_id=task_id)
        except ProtocolError as exc:
            raise ProtocolError(api_message=exc.api_message, method="GET", path=path) from None

    async def upload_image(self, data: bytes, filename: str, content_type: str) -> UploadedImage:
        """Upload an image (`UPLOAD_FORMATS`, `UPLOAD_MAX_BYTES`); its URL lives `UPLOAD_LIFETIME_S`."""

        def form() -> aiohttp.FormData:
            fd = aiohttp.FormData()
            fd.add_field("file", data, filename=filename, content_type=content_type)
            return fd

        method, path = "POST", UPLOAD_PATH
        answer = await self._read(method, path, form_factory=form)
        body: Any = answer.get("data") if isinstance(answer.get("data"), Mapping) else answer
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ProtocolError(api_message="upload answer has no url", method=method, path=path)
        size = _num(body.get("bytes"))
        created = _num(body.get("created_at"))
        expires = _num(body.get("expires_at"))
        if expires is None and created is not None:
            expires = created + UPLOAD_LIFETIME_S
        return UploadedImage(
            url=url,
            bytes=None if size is None else int(size),
            content_type=_str(body.get("content_type")),
            filename=_str(body.get("filename")),
            created_at=created,
            expires_at=expires,
        )

    async def balance(self, *, account: bool = False) -> Balance:
        """Balance of this key (``/v1/balance``) or the whole account (``/v1/user/balance``)."""
        method, path = "GET", "/v1/user/balance" if account else "/v1/balance"
        answer = await self._read(method, path)
        body: Any = answer.get("data") if isinstance(answer.get("data"), Mapping) else answer
        if body.get("success") is False:
            raise ProtocolError(
                api_message="balance answer says success=false", method=method, path=path
            )
        remaining = _num(body.get("remain_balance"))
        used = _num(body.get("used_balance"))
        unlimited = body.get("unlimited_quota") is True or remaining == -1
        if remaining is None and used is None and not unlimited:
            raise ProtocolError(
                api_message="balance answer has no balance", method=method, path=path
            )
        return Balance(
            remaining=None if unlimited and remaining == -1 else remaining,
            used=used,
            unlimited=unlimited,
        )

    # ------------------------------------------------------------------ internals

    async def _read(
        self,
        method: str,
        path: str,
        *,
        form_factory: Callable[[], aiohttp.FormData] | None = None,
    ) -> dict[str, Any]:
        """An idempotent call: retry transient failures per the policy."""
        attempt = 0
        slept = 0.0
        while True:
            attempt += 1
            try:
                return await self._exchange(
                    method, path, form=form_factory() if form_factory else None
                )
            except ApimartError as exc:
                if not exc.retryable:
                    log.debug("%s %s failed: %s", method, path, exc)
                    raise
                slept += await self._backoff_or_raise(exc, attempt, method, path, slept)

    async def _backoff_or_raise(
        self, exc: ApimartError, attempt: int, method: str, path: str, slept: float = 0.0
    ) -> float:
        """Sleep before the next attempt (returns how long), or re-raise ``exc`` when retrying
        is pointless or would wait too long: past ``max_retry_after`` in all (`slept` so far)
        or past the caller's deadline."""
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        if attempt >= self._retry.attempts:
            log.warning("%s %s giving up after %d attempts: %s", method, path, attempt, exc)
            raise exc
        if retry_after is not None and retry_after > self._retry.max_retry_after:
            log.warning("%s %s rate-limited for %.1fs; not waiting", method, path, retry_after)
            raise exc
        delay = self._retry.delay(attempt, retry_after)
        left = time_left()
        if slept + delay > self._retry.max_retry_after or (left is not None and delay > left):
            log.warning(
                "%s %s failed (%s); a %.1fs wait would pass the caller's time limit: not waiting",
                method,
                path,
                exc.summary if exc.status is None else f"{exc.status} {exc.summary}",
                delay,
            )
            raise exc
        log.warning(
            "%s %s attempt %d/%d failed (%s); retrying in %.2fs",
            method,
            path,
            attempt,
            self._retry.attempts,
            exc.summary if exc.status is None else f"{exc.status} {exc.summary}",
            delay,
        )
        await self._sleep(delay)
        return delay

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        form: aiohttp.FormData | None = None,
    ) -> dict[str, Any]:
        """One HTTP round trip -> the JSON object, or a typed :class:`ApimartError`."""
        url = self._base_url + path
        try:
            async with self._session.request(
                method,
                url,
                json=json_body,
                data=form,
                headers={
                    "Authorization": "Bearer " + self._key.get_secret_value(),
                    "Accept": "application/json",
                },
                timeout=self._timeout,
            ) as resp:
                raw = await _read_bounded(resp, method, path)
                status = resp.status
                retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # The TCP connection was never established: the request was not sent.
            own = resource_error(exc)
            if own is not None:
                # EMFILE and friends: this process is out of resources, APIMart is fine.
                raise ApiUnreachable(
                    f"reelbot itself ran out of resources before connecting to APIMart "
                    f"({errno.errorcode.get(own.errno or 0, 'OSError')}: {own.strerror})",
                    request_sent=False,
                    method=method,
                    path=path,
                ) from exc
            raise ApiUnreachable(
                f"could not connect to APIMart ({type(exc).__name__})",
                request_sent=False,
                method=method,
                path=path,
            ) from exc
        except TimeoutError as exc:
            raise ApiUnreachable(
                "APIMart did not answer in time", method=method, path=path
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise ApiUnreachable(
                "the APIMart base URL is invalid",
                request_sent=False,
                retryable=False,
                method=method,
                path=path,
            ) from exc
        except aiohttp.ClientError as exc:
            raise ApiUnreachable(
                f"the connection to APIMart broke ({type(exc).__name__})",
                method=method,
                path=path,
            ) from exc
        return self._decode(method, path, status, raw, retry_after)

    def _scrub(self, text: str) -> str:
        """The core's one scrubber (this client's key is registered with it)."""
        return scrub(text) or ""

    def _decode(
        self, method: str, path: str, status: int, raw: bytes, retry_after: float | None
    ) -> dict[str, Any]:
        """Turn an HTTP answer into the JSON object or raise the matching typed error.

        A 2xx whose body carries an ``error`` object or a ``code`` other than 200 is an
        error too (APIMart wraps some errors that way).
        """
        parsed: Any
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            parsed = None
        except RecursionError:
            raise ProtocolError(
                api_message="the answer is nested too deeply",
                status=status,
                method=method,
                path=path,
            ) from None
        if parsed is not None and not _shallow(parsed, MAX_JSON_DEPTH):
            raise ProtocolError(
                api_message="the answer is nested too deeply",
                status=status,
                method=method,
                path=path,
            )

        if 200 <= status < 300:
            if not isinstance(parsed, dict):
                what = "not JSON" if parsed is None else "not a JSON object"
                raise ProtocolError(
                    api_message=f"the answer is {what}", status=status, method=method, path=path
                )
            code = _num(parsed.get("code"))
            error_obj = parsed.get("error")
            # Success: no error object and a success code (200, or 0 as some gateways say),
            # or data with a non-error code. A submit answered with a task id must never be
            # mistaken for an error: the task exists and will be billed.
            success_code = code is None or int(code) in (0, 200)
            has_data = parsed.get("data") is not None and (code is None or int(code) < 400)
            if not error_obj and (success_code or has_data):
                return parsed
            hint = _num(error_obj.get("code")) if isinstance(error_obj, dict) else None
            hint = hint if hint is not None else code
            error_status = int(hint) if hint is not None and int(hint) >= 400 else None
        elif status >= 400:
            error_status = status
        else:
            raise ProtocolError(
                api_message=f"unexpected HTTP status {status}",
                status=status,
                method=method,
                path=path,
            )

        error_type: str | None = None
        api_message: str | None = None
        if isinstance(parsed, dict):
            err = parsed.get("error")
            if isinstance(err, dict):
                error_type = _str(err.get("type"))
                api_message = _str(err.get("message"))
            elif isinstance(err, str):
                api_message = _str(err)
            if api_message is None:
                api_message = _str(parsed.get("message")) or _str(parsed.get("msg"))
        elif raw:  # e.g. an HTML page from a proxy: a short excerpt helps the operator
            # Scrubbed whole before it is cut (in _scrub), so no part of a key survives a cut.
            api_message = raw.decode("utf-8", "replace")
        if api_message:
            api_message = self._scrub(api_message)

        cls = _class_for(error_status, error_type)
        kwargs: dict[str, Any] = {
            "status": error_status,
            "error_type": error_type,
            "api_message": api_message,
            "method": method,
            "path": path,
        }
        exc: ApimartError
        if cls is RateLimited:
            exc = RateLimited(retry_after=retry_after, **kwargs)
            self._notify_rate_limited(retry_after)
        else:
            exc = cls(**kwargs)
        log.debug("%s %s -> %s", method, path, exc)
        raise exc

    def _notify_rate_limited(self, retry_after: float | None) -> None:
        if self._on_rate_limited is None:
            return
        try:
            self._on_rate_limited(retry_after)
        except Exception:  # a broken hook must not turn a 429 into a crash
            log.exception("on_rate_limited hook failed")

    @staticmethod
    def _task_id_from_submit(answer: dict[str, Any], method: str, path: str) -> str:
        data = answer.get("data")
        candidate: Any = None
        if isinstance(data, list) and data and isinstance(data[0], dict):
            candidate = data[0].get("task_id") or data[0].get("id")
        elif isinstance(data, dict):
            candidate = data.get("task_id") or data.get("id")
        task_id = _str(candidate) if isinstance(candidate, str | int) else None
        if not task_id:
            raise ProtocolError(
                api_message="the submit answer has no task id", method=method, path=path
            )
        if not TASK_ID_SHAPE.fullmatch(task_id):
            raise ProtocolError(
                api_message=f"the submit answer's task id is unusable ({len(task_id)} characters)",
                method=method,
                path=path,
            )
        return task_id
