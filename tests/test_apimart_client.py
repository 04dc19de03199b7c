"""ApimartClient against the fake APIMart over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from bot.core.apimart import (
    ApimartClient,
    ApimartError,
    ApiUnreachable,
    AuthenticationFailed,
    Balance,
    InvalidRequest,
    PaymentRequired,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    RetryPolicy,
    ServerError,
    SubmitOutcomeUnknown,
    TaskInfo,
    TaskNotFound,
)
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan

KEY = "sk-super-secret-key-1234567890"
OMNI = {"model": "Omni-Flash-Ext", "prompt": "a cat on a skateboard", "duration": 6}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

ServerFactory = Callable[..., Awaitable[TestServer]]


class Sleeps:
    """Records requested delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Env:
    def __init__(
        self, fake: FakeApimart, server: TestServer, client: ApimartClient, sleeps: Sleeps
    ) -> None:
        self.fake = fake
        self.server = server
        self.client = client
        self.sleeps = sleeps
        self.rate_limited: list[float | None] = []


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def env(aiohttp_server: ServerFactory, session: aiohttp.ClientSession) -> Env:
    fake = FakeApimart(api_key=KEY, time_scale=1000, default_plan=FakeTaskPlan(duration_s=100))
    server = await aiohttp_server(fake.app)
    sleeps = Sleeps()
    holder: list[float | None] = []
    client = ApimartClient(
        session,
        str(server.make_url("")),
        SecretStr(KEY),
        timeout=2.0,
        sleep=sleeps,
        on_rate_limited=holder.append,
    )
    e = Env(fake, server, client, sleeps)
    e.rate_limited = holder
    return e


def assert_no_key(*things: object) -> None:
    for thing in things:
        assert KEY not in str(thing)
        assert KEY not in repr(thing)
        if isinstance(thing, BaseException):
            assert KEY not in "".join(traceback.format_exception(thing))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- happy path


async def test_submit_poll_until_completed(env: Env, session: aiohttp.ClientSession) -> None:
    task_id = await env.client.submit(OMNI)
    assert task_id in env.fake.tasks
    info = await env.client.get_task(task_id)
    assert (
        info.task_id == task_id and not info.terminal and info.status in {"pending", "processing"}
    )
    env.fake.complete_now(task_id)
    info = await env.client.get_task(task_id)
    assert info.terminal and info.status == "completed" and info.progress == 100
    assert info.cost is not None and info.cost > 0
    assert info.credits_cost == pytest.approx(info.cost * 10)
    assert len(info.video_urls) == 1 and info.video_urls[0].endswith(f"{task_id}.mp4")
    assert info.expires_at is not None and info.completed is not None
    assert info.expires_at == info.completed + 86400
    assert info.error_message is None
    async with session.get(info.video_urls[0]) as resp:
        assert resp.status == 200 and resp.content_type == "video/mp4"
    assert env.sleeps.delays == []


async def test_failed_task(env: Env) -> None:
    env.fake.plan_next(FakeTaskPlan(fail=True, error_message="콘텐츠 심사 실패"))
    task_id = await env.client.submit(OMNI)
    env.fake.fail_now(task_id, "콘텐츠 심사 실패")
    info = await env.client.get_task(task_id)
    assert info.status == "failed" and info.terminal
    assert info.cost == 0 and info.video_urls == ()
    assert info.error_code == "task_failed" and info.error_message == "콘텐츠 심사 실패"


async def test_upload_and_balance(env: Env) -> None:
    up = await env.client.upload_image(PNG, "cat.png", "image/png")
    assert up.url.startswith("http://127.0.0.1") and up.bytes == len(PNG)
    assert up.content_type == "image/png" and up.filename == "cat.png"
    assert up.created_at is not None and up.expires_at == up.created_at + 72 * 3600
    bal = await env.client.balance()
    assert bal == Balance(remaining=100.0, used=0.0, unlimited=False)
    assert await env.client.balance(account=True) == bal


async def test_upload_bad_type_and_too_large(env: Env) -> None:
    with pytest.raises(InvalidRequest) as ei:
        await env.client.upload_image(b"hello", "a.txt", "text/plain")
    assert ei.value.status == 400
    with pytest.raises(InvalidRequest) as ei:
        await env.client.upload_image(PNG + bytes(20 * 1024 * 1024), "big.png", "image/png")
    assert ei.value.status == 413
    assert env.sleeps.delays == []


# ---------------------------------------------------------------- tolerant parsing


@pytest.mark.parametrize(
    "data",
    [
        [{"status": "submitted", "task_id": "task_A"}],
        {"task_id": "task_A"},
        {"id": "task_A", "status": "submitted"},
    ],
)
async def test_submit_task_id_shapes(env: Env, data: Any) -> None:
    env.fake.inject("submit", 200, body=json.dumps({"code": 200, "data": data}))
    assert await env.client.submit(OMNI) == "task_A"


@pytest.mark.parametrize("data", [[], {}, [{"status": "submitted"}], {"task": "x"}, None, "task_A"])
async def test_submit_without_task_id_is_outcome_unknown(env: Env, data: Any) -> None:
    env.fake.inject("submit", 200, body=json.dumps({"code": 200, "data": data}))
    with pytest.raises(SubmitOutcomeUnknown) as ei:
        await env.client.submit(OMNI)
    assert isinstance(ei.value.cause, ProtocolError)
    assert len(env.fake.submit_attempts) == 1


def task_body(**data: Any) -> str:
    return json.dumps({"code": 200, "data": {"id": "task_B", **data}})


async def test_url_string_vs_list_several_videos_missing_cost(env: Env) -> None:
    env.fake.inject(
        "task",
        200,
        body=task_body(
            status="completed",
            progress=100,
            result={
                "videos": [
                    {"url": "https://cdn.example/1.mp4", "expires_at": 200},
                    {"url": ["https://cdn.example/2.mp4", "https://cdn.example/3.mp4"]},
                ]
            },
        ),
    )
    info = await env.client.get_task("task_B")
    assert info.video_urls == (
        "https://cdn.example/1.mp4",
        "https://cdn.example/2.mp4",
        "https://cdn.example/3.mp4",
    )
    assert info.cost is None and info.credits_cost is None and info.expires_at == 200
    assert info.estimated_time is None and info.terminal


@pytest.mark.parametrize(
    ("status", "normalised", "terminal"),
    [
        ("queued", "queued", False),
        ("submitted", "submitted", False),
        ("IN_PROGRESS", "in_progress", False),
        ("Completed", "completed", True),
        ("canceled", "cancelled", True),
        ("FAILED", "failed", True),
    ],
)
async def test_unknown_status_is_running(
    env: Env, status: str, normalised: str, terminal: bool
) -> None:
    env.fake.inject("task", 200, body=task_body(status=status, progress="42"))
    info = await env.client.get_task("task_B")
    assert info.status == normalised and info.terminal is terminal
    assert info.progress == 42


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"<html>502</html>",
        b"[1, 2]",
        json.dumps({"code": 200}).encode(),
        json.dumps({"code": 200, "data": {"id": "task_B"}}).encode(),  # no status
        json.dumps({"code": 200, "data": ["x"]}).encode(),
    ],
)
async def test_malformed_task_answer_is_protocol_error(env: Env, body: bytes) -> None:
    env.fake.inject("task", 200, body=body)
    with pytest.raises(ProtocolError) as ei:
        await env.client.get_task("task_B")
    assert "GET /v1/tasks/task_B" in str(ei.value)
    assert env.sleeps.delays == []


async def test_error_inside_200_body_is_mapped(env: Env) -> None:
    env.fake.inject(
        "task",
        200,
        body=json.dumps(
            {"code": 404, "error": {"message": "任务不存在", "type": "not_found_error"}}
        ),
    )
    with pytest.raises(TaskNotFound) as ei:
        await env.client.get_task("task_B")
    assert ei.value.api_message == "任务不存在" and "任务不存在" in str(ei.value)

    env.fake.inject(
        "submit",
        200,
        body=json.dumps({"error": {"message": "잔액 부족", "type": "payment_required"}}),
    )
    with pytest.raises(PaymentRequired):
        await env.client.submit(OMNI)


# ---------------------------------------------------------------- retries on reads


async def test_429_then_success_honours_retry_after(env: Env) -> None:
    task_id = await env.client.submit(OMNI)
    env.fake.inject("task", 429, times=2, retry_after=7)
    info = await env.client.get_task(task_id)
    assert info.task_id == task_id
    assert env.sleeps.delays == [7.0, 7.0]
    assert env.rate_limited == [7.0, 7.0]
    assert env.fake.requests.count(("GET", f"/v1/tasks/{task_id}")) == 3


async def test_429_without_retry_after_uses_backoff(env: Env) -> None:
    env.fake.inject("balance", 429, times=3)
    await env.client.balance()
    assert len(env.sleeps.delays) == 3
    assert all(0 < d <= 8.0 for d in env.sleeps.delays)
    assert env.sleeps.delays[2] > env.sleeps.delays[0]  # exponential despite jitter
    assert env.rate_limited == [None, None, None]


async def test_long_retry_after_is_not_slept(env: Env) -> None:
    env.fake.inject("balance", 429, retry_after=3600)
    with pytest.raises(RateLimited) as ei:
        await env.client.balance()
    assert ei.value.retry_after == 3600 and env.sleeps.delays == []


async def test_5xx_on_poll_then_success(env: Env) -> None:
    task_id = await env.client.submit(OMNI)
    env.fake.inject("task", 502)
    env.fake.inject("task", 503)
    info = await env.client.get_task(task_id)
    assert info.task_id == task_id and len(env.sleeps.delays) == 2


async def test_reads_give_up_after_attempts(env: Env) -> None:
    env.fake.inject("task", 500, times=10)
    with pytest.raises(ServerError) as ei:
        await env.client.get_task("task_x")
    assert ei.value.status == 500 and ei.value.retryable
    assert len(env.sleeps.delays) == 3  # 4 attempts
    assert env.fake.requests.count(("GET", "/v1/tasks/task_x")) == 4


async def test_read_timeout_retried_then_unreachable(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeApimart(api_key=KEY)
    server = await aiohttp_server(fake.app)
    sleeps = Sleeps()
    client = ApimartClient(
        session,
        str(server.make_url("")),
        KEY,
        timeout=0.15,
        sleep=sleeps,
        retry=RetryPolicy(attempts=2),
    )
    fake.inject("balance", 200, delay=1.0, times=2)
    with pytest.raises(ApiUnreachable) as ei:
        await client.balance()
    assert len(sleeps.delays) == 1
    assert "GET /v1/balance" in str(ei.value)
    assert_no_key(ei.value, client)

    fake.inject("balance", 200, delay=1.0)  # one slow answer, then a normal one
    client2 = ApimartClient(session, str(server.make_url("")), KEY, timeout=0.15, sleep=sleeps)
    assert (await client2.balance()).remaining == 100.0


# ---------------------------------------------------------------- submit safety


async def test_submit_connection_refused_retried_then_unreachable(
    session: aiohttp.ClientSession,
) -> None:
    sleeps = Sleeps()
    client = ApimartClient(session, f"http://127.0.0.1:{free_port()}", KEY, sleep=sleeps)
    with pytest.raises(ApiUnreachable) as ei:
        await client.submit(OMNI)
    assert ei.value.request_sent is False
    assert len(sleeps.delays) == 3  # provably unsent: retried
    assert_no_key(ei.value)


async def test_submit_429_retried_then_exactly_one_task(env: Env) -> None:
    env.fake.inject("submit", 429, times=2, retry_after=1)
    task_id = await env.client.submit(OMNI)
    assert list(env.fake.tasks) == [task_id]
    assert len(env.fake.submit_attempts) == 3 and len(env.fake.submits) == 1
    assert env.sleeps.delays == [1.0, 1.0] and env.rate_limited == [1.0, 1.0]


async def test_submit_timeout_is_outcome_unknown_without_retry(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeApimart(api_key=KEY)
    server = await aiohttp_server(fake.app)
    sleeps = Sleeps()
    client = ApimartClient(session, str(server.make_url("")), KEY, timeout=0.2, sleep=sleeps)
    fake.inject("submit", 200, delay=1.0, accept=True)
    with pytest.raises(SubmitOutcomeUnknown) as ei:
        await client.submit(OMNI)
    assert len(fake.submit_attempts) == 1
    assert len(fake.tasks) == 1  # the server did take it: a retry would bill twice
    assert sleeps.delays == []
    assert isinstance(ei.value.cause, ApiUnreachable)
    assert "may or may not" in str(ei.value)
    assert_no_key(ei.value, client)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_submit_5xx_is_outcome_unknown(env: Env, status: int) -> None:
    env.fake.inject("submit", status, accept=True)
    with pytest.raises(SubmitOutcomeUnknown) as ei:
        await env.client.submit(OMNI)
    assert ei.value.status == status and isinstance(ei.value.cause, ServerError)
    assert len(env.fake.submit_attempts) == 1 and env.sleeps.delays == []


async def test_submit_malformed_200_is_outcome_unknown(env: Env) -> None:
    env.fake.inject("submit", 200, body=b"{broken", accept=True)
    with pytest.raises(SubmitOutcomeUnknown):
        await env.client.submit(OMNI)
    assert len(env.fake.submit_attempts) == 1 and len(env.fake.tasks) == 1


@pytest.mark.parametrize(
    "task_id",
    ["../../etc/passwd\n\x1b[31mforged log line", "t" * 100_000, "task id with spaces"],
)
async def test_submit_answer_with_an_unusable_task_id_is_outcome_unknown(
    env: Env, task_id: str
) -> None:
    """A task id is echoed into logs, the terminal, a URL path and a 128-character column:
    one with control characters or 100 KB is no id this client can follow (nor show)."""
    body = json.dumps({"code": 200, "data": [{"status": "submitted", "task_id": task_id}]})
    env.fake.inject("submit", 200, body=body)
    with pytest.raises(SubmitOutcomeUnknown) as ei:
        await env.client.submit(OMNI)
    assert isinstance(ei.value.cause, ProtocolError)
    assert task_id not in str(ei.value)
    assert len(env.fake.submit_attempts) == 1


# ---------------------------------------------------------------- typed errors


async def test_invalid_request_not_retried_and_message_kept(env: Env) -> None:
    with pytest.raises(InvalidRequest) as ei:
        await env.client.submit({**OMNI, "duration": 7})
    e = ei.value
    assert e.status == 400 and e.error_type == "invalid_duration" and not e.retryable
    assert "invalid duration 7" in str(e) and "POST /v1/videos/generations" in str(e)
    assert len(env.fake.submit_attempts) == 1 and env.sleeps.delays == []


@pytest.mark.parametrize(
    ("status", "cls", "error_type"),
    [
        (401, AuthenticationFailed, "authentication_error"),
        (402, PaymentRequired, "payment_required"),
        (403, PermissionDenied, "permission_error"),
        (404, TaskNotFound, "not_found_error"),
    ],
)
async def test_typed_errors(
    env: Env, status: int, cls: type[ApimartError], error_type: str
) -> None:
    env.fake.inject("task", status)
    env.fake.inject("submit", status)
    with pytest.raises(cls) as ei:
        await env.client.get_task("task_x")
    assert ei.value.status == status and ei.value.error_type == error_type
    assert str(ei.value).startswith(cls.default_summary)
    with pytest.raises(cls):
        await env.client.submit(OMNI)
    assert env.sleeps.delays == [] and len(env.fake.submit_attempts) == 1
    assert_no_key(ei.value)


async def test_real_401_and_404(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeApimart(api_key="another-key")
    server = await aiohttp_server(fake.app)
    client = ApimartClient(session, str(server.make_url("")) + "/v1/", KEY, sleep=Sleeps())
    with pytest.raises(AuthenticationFailed) as ei:
        await client.submit(OMNI)
    assert "did not accept the API key" in str(ei.value)
    assert_no_key(ei.value, client)

    good = ApimartClient(session, str(server.make_url("")), "another-key", sleep=Sleeps())
    with pytest.raises(TaskNotFound):
        await good.get_task("task_unknown")


async def test_payment_required_from_empty_balance(
    aiohttp_server: ServerFactory, session: aiohttp.ClientSession
) -> None:
    fake = FakeApimart(api_key=KEY, balance=0)
    server = await aiohttp_server(fake.app)
    client = ApimartClient(session, str(server.make_url("")), KEY, sleep=Sleeps())
    with pytest.raises(PaymentRequired) as ei:
        await client.submit(OMNI)
    assert ei.value.error_type == "payment_required"
    assert fake.tasks == {}


async def test_key_never_leaks(env: Env) -> None:
    # an API that echoes the key in its error message still must not leak it
    env.fake.inject(
        "task", 400, body=json.dumps({"error": {"message": f"bad key {KEY}", "type": "x"}})
    )
    with pytest.raises(InvalidRequest) as ei:
        await env.client.get_task("task_x")
    assert "***" in str(ei.value)
    assert_no_key(ei.value, env.client)
    assert "ApimartClient(base_url=" in repr(env.client)


async def test_key_not_in_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="bot.core.apimart")
    env.fake.inject("task", 500, times=2)
    await env.client.get_task(await env.client.submit(OMNI))
    env.fake.inject("submit", 502)
    with pytest.raises(SubmitOutcomeUnknown):
        await env.client.submit(OMNI)
    assert caplog.records  # retries and errors are logged ...
    assert KEY not in caplog.text  # ... without the key


def test_task_info_is_frozen_and_raw_not_compared() -> None:
    a = TaskInfo.from_api({"id": "t", "status": "processing", "progress": 5})
    b = TaskInfo.from_api({"id": "t", "status": "processing", "progress": 5, "extra": 1})
    assert a == b and "raw" not in repr(a)
    with pytest.raises(AttributeError):
        a.status = "x"  # type: ignore[misc]


# -- review findings: answers a documented-API server may give differently ----------------------


@pytest.mark.parametrize("code", [0, "0", None])
async def test_submit_with_a_task_id_is_accepted_whatever_the_success_code(
    env: Env, code: Any
) -> None:
    body: dict[str, Any] = {"msg": "success", "data": {"task_id": "task_Z"}}
    if code is not None:
        body["code"] = code
    env.fake.inject("submit", 200, body=json.dumps(body))
    assert await env.client.submit(OMNI) == "task_Z"


async def test_a_2xx_with_an_error_code_and_no_data_is_still_an_error(env: Env) -> None:
    env.fake.inject(
        "submit", 200, body=json.dumps({"code": 402, "msg": "no balance", "data": None})
    )
    with pytest.raises(PaymentRequired):
        await env.client.submit(OMNI)


async def test_key_in_an_html_error_page_is_removed_before_it_is_shortened(env: Env) -> None:
    page = "<html>" + "x" * 190 + f" Authorization: Bearer {KEY} </html>"
    env.fake.inject("task", 401, body=page)
    with pytest.raises(AuthenticationFailed) as caught:
        await env.client.get_task("task_1")
    text = f"{caught.value} {caught.value!r} {caught.value.api_message}"
    assert KEY[:12] not in text
    assert "Bearer ***" in text
