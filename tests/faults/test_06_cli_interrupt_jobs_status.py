"""Issue 8 item 6: Ctrl-C / SIGTERM in `reelbot generate`, `reelbot jobs`, `reelbot status`, and
a starting bot leaving a job alone while the terminal that started it still follows it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.core.apimart import ApimartClient
from bot.core.job import JobState
from bot.core.owner import terminal_origin
from bot.core.request import build_request
from bot.core.store import Store, jobs_table
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan

KEY = "sk-cli-faults-key-abcdef"


def _env(api_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APIMART_", "DISCORD_"))}
    env.update(
        APIMART_BASE_URL=api_url,
        APIMART_API_KEY=KEY,
        POLL_INITIAL_DELAY="0.1",
        POLL_INTERVAL="0.1",
        POLL_MAX_INTERVAL="0.5",
        DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
    )
    return env


async def _start(env: dict[str, str], cwd: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _run(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await _start(env, cwd, *args)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _until(predicate: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
async def cli_api(aiohttp_server: Any) -> tuple[FakeApimart, str]:
    fake = FakeApimart(api_key=KEY, default_plan=FakeTaskPlan(duration_s=100_000))
    server = await aiohttp_server(fake.app)
    return fake, str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_an_interrupted_generate_prints_the_task_and_one_json_object(
    cli_api: tuple[FakeApimart, str], tmp_path: Path, sig: signal.Signals
) -> None:
    fake, url = cli_api
    env = _env(url, tmp_path)
    # The submit's answer is held at the stand-in: the signal comes while it is in flight.
    fake.inject("submit", 200, accept=True, delay=1.0)
    proc = await _start(env, tmp_path, "generate", "a fox", "--duration", "4", "--json")
    await _until(lambda: fake.submits)
    proc.send_signal(sig)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    (task_id,) = fake.tasks
    assert proc.returncode == 130, err.decode()
    objects = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert len(objects) == 1 and objects[0]["task_id"] == task_id
    assert f"reelbot status {task_id}" in err.decode() and "billed" in err.decode()
    assert "Traceback" not in err.decode()

    # Later: the task finished; `status` fetches it, records it, and `jobs` shows it.
    fake.complete_now(task_id)
    code, out, err = await _run(env, tmp_path, "status", task_id, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "completed" and result["video_urls"]
    code, out, _ = await _run(env, tmp_path, "jobs")
    assert code == 0 and task_id in out and "completed" in out
    assert len(fake.submits) == 1


async def test_status_of_an_unknown_task_id_reads_it_and_exits_like_generate(
    cli_api: tuple[FakeApimart, str], tmp_path: Path
) -> None:
    _, url = cli_api
    env = _env(url, tmp_path)
    code, _, err = await _run(env, tmp_path, "status", "task_nobody_knows")
    assert code == 3 and "task_nobody_knows" in err and "Traceback" not in err
    code, _, err = await _run(env, tmp_path, "status", "42")
    assert code == 2 and "no job #42" in err


async def test_a_starting_bot_leaves_a_job_its_terminal_still_follows(
    faulty_pipeline: Any, database_url: str
) -> None:
    # A terminal (another live process) is submitting this job right now: it holds the lease.
    store = await Store.open(database_url)
    request = build_request(model="sora-2", prompt="a fox")
    job = await store.create(
        request,
        now=time.time(),
        origin=terminal_origin(time.time()),
        owner="terminal-1",
        lease_until=time.time() + 30,
    )
    await store.update(job, state=JobState.SUBMITTING)
    async with faulty_pipeline(resume=False) as p:  # a bot starts: it must not touch it
        counts = await p.jobs.resume()
        assert counts["owned elsewhere"] == 1
        await asyncio.sleep(0.1)
        assert not p.notifier.finished
    stored = await store.get(job.id)
    assert stored is not None and stored.state is JobState.SUBMITTING
    # Its terminal is gone: it stops renewing, and the lease runs out.
    async with store.transaction() as conn:
        await conn.execute(jobs_table.update().values(lease_until=time.time() - 1))
    async with faulty_pipeline() as p:  # now the bot settles it
        told = await p.notifier.wait_finished(job.id, timeout=5)
        assert told.state is JobState.UNKNOWN
    await store.close()


async def test_status_only_reads_a_job_the_bot_is_following(
    cli_api: tuple[FakeApimart, str], tmp_path: Path
) -> None:
    fake, url = cli_api
    env = _env(url, tmp_path)
    # A job the bot submitted and follows (a Discord origin, `running`), finished at APIMart.
    code, _, _ = await _run(env, tmp_path, "jobs")  # creates the database
    assert code == 0
    store = await Store.open(env["DATABASE_URL"].replace("sqlite://", "sqlite+aiosqlite://"))
    try:
        job = await store.create(
            build_request(model="sora-2", prompt="a fox"),
            now=time.time(),
            origin={"kind": "discord", "channel_id": "1"},
        )
        async with aiohttp.ClientSession() as session:  # a real task at the stand-in
            task_id = await ApimartClient(session, url, KEY).submit(
                build_request(model="sora-2", prompt="a fox").to_payload()
            )
        await store.update(job, state=JobState.RUNNING, task_id=task_id, submitted_at=time.time())
        fake.complete_now(task_id)
        code, out, err = await _run(env, tmp_path, "status", str(job.id), "--json")
        assert code == 0 and json.loads(out)["status"] == "completed"
        assert "the bot follows this job" in err
        stored = await store.get(job.id)
        assert stored is not None and stored.state is JobState.RUNNING  # left to the bot
    finally:
        await store.close()


async def test_generate_timeout_stops_following_and_says_unknown_with_the_task(
    cli_api: tuple[FakeApimart, str], tmp_path: Path
) -> None:
    fake, url = cli_api
    env = _env(url, tmp_path)
    code, out, _ = await _run(
        env, tmp_path, "generate", "a fox", "--duration", "4", "--timeout", "1", "--json"
    )
    (task_id,) = fake.tasks
    result = json.loads(out)
    assert code == 1 and result["status"] == "unknown" and result["task_id"] == task_id
    assert "may still be billed" in result["error"]
