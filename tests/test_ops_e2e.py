"""`reelbot run` as an operator meets it: probes, metrics, sharding, JSON logs, SIGTERM.

The real process against the fake Discord and the stand-in APIMart (fixtures of
`tests/test_e2e.py`), its HTTP listener on a free port that it logs.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bot.core.config import Settings
from bot.core.store import metadata
from tests.conftest import POSTGRES_URL
from tests.test_e2e import API_KEY, TOKEN, World, world_fixture  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


async def start(world: World, **env: str) -> asyncio.subprocess.Process:
    log = world.tmp / f"reelbot-{len(world.logs)}.log"
    world.logs.append(log)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=world.tmp,
        env={**world.env(), **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=asyncio.subprocess.STDOUT,
    )


async def port_of(world: World, timeout: float = 20.0) -> int:
    async with asyncio.timeout(timeout):
        while not (found := LISTENING.search(world.all_logs())):
            await asyncio.sleep(0.05)
    return int(found.group(1))


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


async def until_ready(world: World, port: int, timeout: float = 30.0) -> dict[str, Any]:
    last: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    status, text = await get(port, "/readyz")
                except aiohttp.ClientConnectionError as exc:  # exited? the logs say why
                    raise AssertionError(f"{exc}\n{world.all_logs()[-3000:]}") from None
                last = json.loads(text)
                if status == 200:
                    return dict(last)
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"never ready: {last}\n{world.all_logs()[-3000:]}") from None


async def wipe(url: str) -> None:
    engine = create_async_engine(Settings(_env_file=None, DATABASE_URL=url).DATABASE_URL)  # type: ignore[call-arg]
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()


async def stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(20):
            return await proc.wait()
    except TimeoutError:
        proc.kill()
        return await proc.wait()


async def test_run_serves_health_readiness_and_metrics(world: World) -> None:
    proc = await start(world, LOG_FORMAT="json")
    try:
        port = await port_of(world)
        assert await get(port, "/healthz") == (200, '{"ok": true}')
        body = await until_ready(world, port)
        assert body["checks"] == {"database": "ok", "gateway": "ok", "poller": "ok"}
        status, text = await get(port, "/metrics")
        assert status == 200
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {"reelbot_jobs", "reelbot_polls", "reelbot_spend_today"} <= names

        await world.discord.close()  # Discord goes away: the worker is no longer ready
        status, text = await get(port, "/readyz")
        for _ in range(100):
            if status == 503:
                break
            await asyncio.sleep(0.1)
            status, text = await get(port, "/readyz")
        assert status == 503 and json.loads(text)["failing"] == ["gateway"]
        assert (await get(port, "/healthz"))[0] == 200  # alive all the same
    finally:
        assert await stop(proc) == 0
    logs = world.all_logs()
    lines = [line for line in logs.splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # LOG_FORMAT=json: every line an object
    assert any("listening on" in e["message"] for e in events)
    assert API_KEY not in logs and TOKEN not in logs


async def test_a_sharded_worker_on_postgresql_paces_identify_through_the_database(
    world: World,
) -> None:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL: set REELBOT_TEST_POSTGRES_URL (.ci/run does)")
    url = make_url(POSTGRES_URL).render_as_string(hide_password=False)
    await wipe(POSTGRES_URL)  # no jobs left by other tests to resume
    sync = await world.reelbot("sync", "--guild", str(world.guild_id))
    assert await sync.wait() == 0, world.all_logs()
    before = world.discord.ready_count
    proc = await start(world, SHARD_COUNT="2", SHARD_IDS="0-1", DATABASE_URL=url)
    try:
        port = await port_of(world)
        await until_ready(world, port, timeout=40.0)
        assert world.discord.ready_count == before + 2  # one session per shard
        assert world.discord.identified_shards == [[0, 2], [1, 2]]
        logs = world.all_logs()
        assert "running shard(s) [0, 1] of 2" in logs
        # The fake Discord says max_concurrency 1: shard 1 waits for shard 0's bucket.
        assert "shard 1: waiting for IDENTIFY bucket 0" in logs
        # A command in the server reaches the shard that holds it, and the video comes back.
        await world.discord.dispatch("INTERACTION_CREATE", world.slash_sora("a sharded fox"))
        async with asyncio.timeout(30):
            while not world.results():
                await asyncio.sleep(0.1)
        assert len(world.api.submits) == 1
    finally:
        assert await stop(proc) == 0


async def test_a_taken_http_port_stops_run_with_one_line(world: World) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await start(world, HTTP_LISTEN=f"127.0.0.1:{port}")
        # A settings problem like any other: the variable to fix, exit 2.
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 2
    finally:
        server.close()
    assert f"HTTP_LISTEN: cannot listen on 127.0.0.1:{port}" in world.all_logs()
    assert "Traceback" not in world.all_logs()
