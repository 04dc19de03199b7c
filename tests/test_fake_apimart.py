"""The fake APIMart follows the documented contract (tested over real HTTP)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.testing.clock import ManualClock
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock() -> ManualClock:
    """Hand-moved time, so progression tests need no sleeping."""
    return ManualClock(1000.0)


@pytest.fixture
async def fake_srv(
    aiohttp_server: ServerFactory, clock: ManualClock
) -> tuple[FakeApimart, TestServer]:
    fake = FakeApimart(api_key=KEY, clock=clock.now)
    server = await aiohttp_server(fake.app)
    return fake, server


async def post_json(
    http: aiohttp.ClientSession, server: TestServer, path: str, body: Any, headers: Any = None
) -> tuple[int, Any]:
    async with http.post(
        server.make_url(path), json=body, headers=AUTH if headers is None else headers
    ) as resp:
        return resp.status, await resp.json()


async def get_json(
    http: aiohttp.ClientSession, server: TestServer, path: str, headers: Any = None
) -> tuple[int, Any]:
    async with http.get(server.make_url(path), headers=AUTH if headers is None else headers) as r:
        return r.status, await r.json()


def omni(**kw: Any) -> dict[str, Any]:
    return {"model": "Omni-Flash-Ext", "prompt": "a cat", **kw}


def veo(**kw: Any) -> dict[str, Any]:
    return {"model": "veo3.1-fast-official", "prompt": "a cat", **kw}


def sora(model: str = "sora-2", **kw: Any) -> dict[str, Any]:
    return {"model": model, "prompt": "a cat", **kw}


IMG = "https://example.com/a.png"
VID = "https://example.com/a.mp4"

BAD_BODIES = [
    (omni(model="nope"), "invalid_request_error"),
    (omni(prompt=""), "invalid_request_error"),
    ({"model": "Omni-Flash-Ext"}, "invalid_request_error"),
    (omni(duration=7), "invalid_duration"),
    (omni(duration="6"), "invalid_duration"),
    (omni(resolution="2k"), "invalid_resolution"),
    (omni(image_urls=[IMG, IMG]), "unsupported_image_count"),
    (omni(image_urls=[IMG] * 4), "unsupported_image_count"),
    (omni(image_urls=[IMG] * 3, generation_type="frame"), "unsupported_image_count"),
    (omni(generation_type="reference"), "unsupported_image_count"),
    (omni(video_urls=[VID, VID]), "unsupported_video_count"),
    (omni(video_urls=[VID], duration=6), "invalid_request_error"),
    (omni(aspect_ratio="4:3"), "invalid_request_error"),
    (omni(image_urls=["data:image/png;base64,AAAA"]), "invalid_request_error"),
    (veo(duration="8"), "invalid_request_error"),
    (veo(duration=5), "invalid_duration"),
    (veo(resolution="2160p"), "invalid_resolution"),
    (veo(last_frame_image=IMG), "invalid_request_error"),
    (veo(seed=-1), "invalid_request_error"),
    (veo(seed=4294967296), "invalid_request_error"),
    (veo(sample_count=5), "invalid_request_error"),
    (veo(enhance_prompt=False), "invalid_request_error"),
    (veo(person_generation="everyone"), "invalid_request_error"),
    (veo(resize_mode="stretch"), "invalid_request_error"),
    (sora(duration=6), "invalid_duration"),
    (sora(resolution="1080p"), "invalid_resolution"),
    (sora("sora-2-pro", resolution="4k"), "invalid_resolution"),
    (sora(image_urls=[IMG, IMG]), "unsupported_image_count"),
    (sora(aspect_ratio="square"), "invalid_request_error"),
]


@pytest.mark.parametrize(("body", "error_type"), BAD_BODIES)
async def test_submit_rejects_bad_bodies(
    fake_srv: tuple[FakeApimart, TestServer],
    http: aiohttp.ClientSession,
    body: dict[str, Any],
    error_type: str,
) -> None:
    fake, server = fake_srv
    status, answer = await post_json(http, server, "/v1/videos/generations", body)
    assert status == 400
    assert answer["error"]["type"] == error_type
    assert answer["error"]["code"] == 400 and answer["error"]["message"]
    assert fake.submits == [] and fake.tasks == {}
    assert len(fake.submit_attempts) == 1


GOOD_BODIES = [
    omni(),
    omni(duration=10, resolution="4K", aspect_ratio="9:16", size="9:16"),
    omni(image_urls=[IMG] * 3),
    omni(image_urls=[IMG], generation_type="frame"),
    omni(image_urls=[IMG] * 3, generation_type="reference"),
    omni(video_urls=[VID], image_urls=[IMG]),
    veo(
        duration=6,
        resolution="4K",
        seed=4294967295,
        sample_count=2,
        enhance_prompt=True,
        first_frame_image=IMG,
        last_frame_image=IMG,
        resize_mode="crop",
        person_generation="disallow",
        generate_audio=True,
    ),
    {"model": "veo3.1-quality-official", "prompt": "x"},
    sora(duration=20, aspect_ratio="portrait"),
    sora("sora-2-pro", resolution="1024p", image_urls=[IMG]),
]


@pytest.mark.parametrize("body", GOOD_BODIES)
async def test_submit_accepts_documented_bodies(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    fake, server = fake_srv
    status, answer = await post_json(http, server, "/v1/videos/generations", body)
    assert status == 200, answer
    assert answer["code"] == 200
    [entry] = answer["data"]
    assert entry["status"] == "submitted"
    assert entry["task_id"].startswith("task_")
    assert entry["task_id"] in fake.tasks
    assert fake.submits == [body]


async def test_auth_required_everywhere(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession
) -> None:
    fake, server = fake_srv
    bad = {"Authorization": "Bearer wrong"}
    for status, answer in [
        await post_json(http, server, "/v1/videos/generations", omni(), headers=bad),
        await post_json(http, server, "/v1/videos/generations", omni(), headers={}),
        await get_json(http, server, "/v1/tasks/task_x", headers=bad),
        await get_json(http, server, "/v1/balance", headers=bad),
    ]:
        assert status == 401
        assert answer["error"]["type"] == "authentication_error"
    assert fake.tasks == {}


async def test_unknown_task_is_404(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession
) -> None:
    _, server = fake_srv
    status, answer = await get_json(http, server, "/v1/tasks/task_nope")
    assert status == 404
    assert answer["error"]["type"] == "not_found_error"


async def test_task_progression_and_result(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    fake, server = fake_srv
    _, answer = await post_json(
        http, server, "/v1/videos/generations", omni(duration=8, resolution="1080p")
    )
    task_id = answer["data"][0]["task_id"]
    path = f"/v1/tasks/{task_id}"

    _, first = await get_json(http, server, path)
    assert first["code"] == 200
    assert first["data"]["status"] == "pending" and first["data"]["progress"] == 0
    assert "cost" not in first["data"] and "result" not in first["data"]

    seen: list[int] = []
    for t in range(30, 240, 10):
        await clock.run_until(1000.0 + t)
        _, running = await get_json(http, server, path)
        assert running["data"]["status"] == "processing"
        seen.append(running["data"]["progress"])
    assert seen == sorted(seen), "progress must never go down"
    assert 0 < seen[0] < 30 and seen[-1] < 100
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert len(set(steps)) > 2, "progress should rise unevenly"

    await clock.run_until(1000.0 + 240)
    _, done = await get_json(http, server, path)
    data = done["data"]
    assert data["status"] == "completed" and data["progress"] == 100
    assert data["id"] == task_id
    assert data["completed"] - data["created"] == 240 == data["actual_time"]
    assert data["estimated_time"] == 600
    assert data["cost"] > 0 and data["credits_cost"] == pytest.approx(data["cost"] * 10)
    [video] = data["result"]["videos"]
    assert isinstance(video["url"], list) and len(video["url"]) == 1
    assert video["expires_at"] == data["completed"] + 86400
    assert fake.balance == pytest.approx(100.0 - data["cost"])

    # the result URL serves a small MP4
    async with http.get(video["url"][0]) as resp:
        assert resp.status == 200
        assert resp.content_type == "video/mp4"
        blob = await resp.read()
    assert blob[4:8] == b"ftyp" and 1000 < len(blob) < 100_000


async def test_cost_depends_on_model_resolution_and_seconds(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession
) -> None:
    fake, server = fake_srv

    async def cost(body: dict[str, Any]) -> float:
        status, answer = await post_json(http, server, "/v1/videos/generations", body)
        assert status == 200, answer
        task_id = answer["data"][0]["task_id"]
        fake.complete_now(task_id)
        _, done = await get_json(http, server, f"/v1/tasks/{task_id}")
        assert done["data"]["status"] == "completed"
        return float(done["data"]["cost"])

    omni_720_4 = await cost(omni(duration=4))
    omni_720_10 = await cost(omni(duration=10))
    omni_4k_10 = await cost(omni(duration=10, resolution="4k"))
    sora_4 = await cost(sora(duration=4))
    pro_4 = await cost(sora("sora-2-pro", duration=4))
    assert omni_720_4 < omni_720_10 < omni_4k_10
    assert sora_4 < pro_4
    assert omni_720_10 == pytest.approx(omni_720_4 * 10 / 4)
    assert sora_4 != omni_720_4

    _, bal = await get_json(http, server, "/v1/balance")
    assert bal["success"] is True and bal["unlimited_quota"] is False
    spent = omni_720_4 + omni_720_10 + omni_4k_10 + sora_4 + pro_4
    assert bal["used_balance"] == pytest.approx(spent)
    assert bal["remain_balance"] == pytest.approx(100.0 - spent)
    _, user_bal = await get_json(http, server, "/v1/user/balance")
    assert user_bal == bal


async def test_veo_sample_count_gives_several_videos(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession
) -> None:
    fake, server = fake_srv
    _, answer = await post_json(http, server, "/v1/videos/generations", veo(sample_count=3))
    task_id = answer["data"][0]["task_id"]
    fake.complete_now(task_id)
    _, done = await get_json(http, server, f"/v1/tasks/{task_id}")
    urls = [v["url"][0] for v in done["data"]["result"]["videos"]]
    assert len(set(urls)) == 3
    for url in urls:
        async with http.get(url) as resp:
            assert resp.status == 200


async def test_failed_plan_costs_nothing(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    fake, server = fake_srv
    fake.plan_next(FakeTaskPlan(duration_s=100, fail=True, error_message="content moderation"))
    _, answer = await post_json(http, server, "/v1/videos/generations", omni())
    task_id = answer["data"][0]["task_id"]
    await clock.advance(50)
    _, mid = await get_json(http, server, f"/v1/tasks/{task_id}")
    assert mid["data"]["status"] == "processing"
    await clock.advance(60)
    _, done = await get_json(http, server, f"/v1/tasks/{task_id}")
    data = done["data"]
    assert data["status"] == "failed"
    assert data["cost"] == 0 and data["credits_cost"] == 0
    assert data["error"] == {"message": "content moderation", "code": "task_failed"}
    assert mid["data"]["progress"] <= data["progress"] < 100
    assert "result" not in data
    assert fake.balance == 100.0

    # a failed task serves no file
    async with http.get(server.make_url(f"/files/{task_id}.mp4")) as resp:
        assert resp.status == 404


async def test_fail_now(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession
) -> None:
    fake, server = fake_srv
    _, answer = await post_json(http, server, "/v1/videos/generations", omni())
    task_id = answer["data"][0]["task_id"]
    fake.fail_now(task_id, "upstream quota")
    _, done = await get_json(http, server, f"/v1/tasks/{task_id}")
    assert done["data"]["status"] == "failed"
    assert done["data"]["error"]["message"] == "upstream quota"


async def test_time_scale_finishes_quickly(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    fake = FakeApimart(api_key=KEY, time_scale=1000)  # 240 s -> 0.24 s
    server = await aiohttp_server(fake.app)
    _, answer = await post_json(http, server, "/v1/videos/generations", sora())
    task_id = answer["data"][0]["task_id"]
    await asyncio.sleep(0.3)
    _, done = await get_json(http, server, f"/v1/tasks/{task_id}")
    assert done["data"]["status"] == "completed"


async def test_payment_required(aiohttp_server: ServerFactory, http: aiohttp.ClientSession) -> None:
    fake = FakeApimart(api_key=KEY, balance=0.1)
    server = await aiohttp_server(fake.app)
    status, answer = await post_json(
        http, server, "/v1/videos/generations", omni(duration=10, resolution="4k")
    )
    assert status == 402 and answer["error"]["type"] == "payment_required"
    status, _ = await post_json(http, server, "/v1/videos/generations", sora())  # 0.04
    assert status == 200
    fake.balance = 0
    status, answer = await post_json(http, server, "/v1/videos/generations", sora())
    assert status == 402
    assert len(fake.tasks) == 1


async def test_upload_image(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession
) -> None:
    fake, server = fake_srv
    form = aiohttp.FormData()
    form.add_field("file", PNG, filename="a.png", content_type="image/png")
    async with http.post(server.make_url("/v1/uploads/images"), data=form, headers=AUTH) as r:
        assert r.status == 200
        answer = await r.json()
    assert answer["content_type"] == "image/png"
    assert answer["bytes"] == len(PNG) and answer["filename"] == "a.png"
    assert isinstance(answer["created_at"], int)
    async with http.get(answer["url"]) as r:
        assert r.status == 200 and r.content_type == "image/png"
        assert await r.read() == PNG
    assert list(fake.uploads.values()) == [PNG]


async def test_upload_rejects_bad_type_missing_file_and_too_large(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession
) -> None:
    _, server = fake_srv
    url = server.make_url("/v1/uploads/images")

    form = aiohttp.FormData()
    form.add_field("file", b"%PDF-1.4 nope", filename="a.pdf", content_type="application/pdf")
    async with http.post(url, data=form, headers=AUTH) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"

    form = aiohttp.FormData()
    form.add_field("other", b"x", filename="x.png", content_type="image/png")
    async with http.post(url, data=form, headers=AUTH) as r:
        assert r.status == 400

    big = PNG + b"\x00" * (20 * 1024 * 1024)
    form = aiohttp.FormData()
    form.add_field("file", big, filename="big.png", content_type="image/png")
    async with http.post(url, data=form, headers=AUTH) as r:
        assert r.status == 413


async def test_inject_raw_body_retry_after_and_times(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession
) -> None:
    fake, server = fake_srv
    fake.inject("balance", 429, times=2, retry_after=3)
    fake.inject("balance", 200, body=b"not json")
    for _ in range(2):
        async with http.get(server.make_url("/v1/balance"), headers=AUTH) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "3"
            assert (await r.json())["error"]["type"] == "rate_limit_error"
    async with http.get(server.make_url("/v1/balance"), headers=AUTH) as r:
        assert r.status == 200 and await r.read() == b"not json"
    status, _ = await get_json(http, server, "/v1/balance")
    assert status == 200
    assert fake.requests.count(("GET", "/v1/balance")) == 4


async def test_inject_submit_accept_creates_task_but_answers_error(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession
) -> None:
    fake, server = fake_srv
    fake.inject("submit", 502, accept=True)
    status, answer = await post_json(http, server, "/v1/videos/generations", omni())
    assert status == 502 and answer["error"]["type"] == "bad_gateway"
    assert len(fake.tasks) == 1 and len(fake.submits) == 1
    fake.inject("submit", 500)
    status, _ = await post_json(http, server, "/v1/videos/generations", omni())
    assert status == 500
    assert len(fake.tasks) == 1 and len(fake.submit_attempts) == 2


async def test_webhook_delivered_without_polling(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    received: list[dict[str, Any]] = []
    hits = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        received.append(await request.json())
        # the first delivery "fails": the fake must retry (a duplicate is harmless)
        return web.Response(status=500 if hits == 1 else 200)

    receiver = web.Application()
    receiver.router.add_post("/hooks/callback", hook)
    hook_server = await aiohttp_server(receiver)

    fake = FakeApimart(api_key=KEY, time_scale=1000, default_plan=FakeTaskPlan(duration_s=20))
    server = await aiohttp_server(fake.app)
    webhook = str(hook_server.make_url("/hooks"))
    status, answer = await post_json(http, server, "/v1/videos/generations", omni(webhook=webhook))
    assert status == 200
    task_id = answer["data"][0]["task_id"]

    for _ in range(100):
        if len(received) >= 2:
            break
        await asyncio.sleep(0.02)
    assert len(received) == 2
    assert all(r["data"]["id"] == task_id for r in received)
    assert received[-1]["data"]["status"] == "completed"
    assert [a.status for a in fake.callbacks_sent] == [500, 200]
    assert fake.requests == [("POST", "/v1/videos/generations")]  # nobody polled


async def test_ticker_finishes_due_tasks_once(
    fake_srv: tuple[FakeApimart, TestServer], http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    fake, server = fake_srv
    fake.plan_next(FakeTaskPlan(duration_s=10))
    for _ in range(30):
        status, _ = await post_json(http, server, "/v1/videos/generations", sora())
        assert status == 200
    await clock.advance(60)  # the first task (10 s plan) is due, the others (240 s) are not
    fake._expire_due()
    done = [t for t in fake.tasks.values() if t.final_status == "completed"]
    assert len(done) == 1
    await clock.advance(240)
    fake._expire_due()
    fake._expire_due()
    assert all(t.final_status == "completed" for t in fake.tasks.values())
    assert fake.used_balance == pytest.approx(30 * 0.04)
