"""The Discord part of bench/load.py: bounded deliveries and one budget per channel.

A restart finds `JOBS` finished-but-undelivered jobs with 8 MB videos spread over `CHANNELS`
channels, while `RUNNING` other jobs in the same channels keep sending progress events. The
real `DiscordNotifier` (discord.py over HTTP) delivers them through the real
`Poller.deliver` (bounded by `DELIVERY_CONCURRENCY`) after `JobService.resume()`.

The fake Discord and the video server run in a child process (`--serve`), so this process's
peak RSS and event-loop lag are the bot's own; the fake enforces Discord's per-channel bucket
(5 requests per 5 s, 429 beyond) and reports the most requests any channel received in any
5 s window. It keeps no upload bytes (it would hold 1.6 GB otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SELF = str(Path(__file__).resolve())
VIDEO_BYTES = 8 * 1024 * 1024
TOKEN = "fake-bot-token"  # the fake's default


def sizes(quick: bool) -> dict[str, int]:
    return {"jobs": 50 if quick else 200, "channels": 5 if quick else 10, "running": 50}


# -- the child: fake Discord + video server ---------------------------------------------------


async def serve(quick: bool) -> None:
    from aiohttp import web

    from bot.testing.fake_discord import FakeDiscord
    from bot.testing.fake_discord.records import RecordedRequest

    class LightFake(FakeDiscord):
        """Keeps sizes, not bytes, of what is uploaded."""

        def _cdn_store(self, path: str, aid: int, filename: str, data: bytes, *a: Any, **k: Any):  # type: ignore[no-untyped-def,override]
            return super()._cdn_store(path, aid, filename, b"", *a, **k)

        def _record(self, record: RecordedRequest) -> None:
            record.file_data = []
            super()._record(record)

    n = sizes(quick)
    fake = LightFake(channel_limit=(5, 5.0))
    guild = fake.add_guild("Bench")
    channels = [
        int(fake.add_text_channel(guild["id"], f"c{i}")["id"]) for i in range(n["channels"])
    ]
    statuses: list[list[int]] = []
    for cid in channels:  # one status message per job, seeded (not counted as requests)
        ids = []
        for _ in range((n["jobs"] + n["running"]) // len(channels) + 1):
            msg = fake._build_message(
                channel_id=cid, body={"content": "status"}, uploads=[], size_limit=1 << 30
            )
            fake._store_message(msg)
            ids.append(int(msg["id"]))
        statuses.append(ids)
    await fake.start()
    video = random.Random(1).randbytes(VIDEO_BYTES)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(video)
        await response.prepare(request)
        view = memoryview(video)
        for i in range(0, len(video), 1 << 16):
            await response.write(view[i : i + (1 << 16)])
        return response

    app = web.Application()
    app.router.add_get("/v/{n}.mp4", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(
        json.dumps(
            {
                "rest_base": fake.rest_base,
                "gateway_url": fake.gateway_url,
                "video": f"http://127.0.0.1:{port}/v",
                "guild": int(guild["id"]),
                "channels": channels,
                "statuses": statuses,
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "stats" or EOF
    buckets = fake.channel_buckets
    assert buckets is not None
    posted = [r for r in fake.requests if r.method == "POST" and r.status == 200]
    print(
        json.dumps(
            {
                "max_per_5s": buckets.max_in_window(5.0),
                "rejected_429": buckets.rejected,
                "results_with_video": sum(1 for r in posted if r.files),
                "requests": len(fake.requests),
                "trace": [
                    (round(r.at % 1000, 3), r.method, r.path.split("/")[2], r.status, len(r.files))
                    for r in fake.requests
                    if "/messages" in r.path
                ]
                if os.environ.get("BENCH_TRACE")
                else [],
            }
        ),
        flush=True,
    )
    await fake.close()
    await runner.cleanup()


# -- the measured side: the bot's notifier and poller ------------------------------------------


async def _lag(samples: list[float], busy: list[float], stop: asyncio.Event) -> None:
    """How late a 10 ms sleep wakes (`samples`), and how much of that lateness the loop's
    thread spent on the CPU (`busy`): on a shared machine the OS may also hold the process
    off the CPU, which is lateness no code of ours caused."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start, cpu = loop.time(), time.thread_time()
        await asyncio.sleep(0.01)
        late = max(0.0, loop.time() - start - 0.01)
        samples.append(late)
        busy.append(min(late, time.thread_time() - cpu))


async def run_discord(*, quick: bool = False) -> dict[str, Any]:
    import aiohttp
    import discord

    from bench.poller import _request
    from bot.core.clock import SystemClock
    from bot.core.fetch import FetchPolicy
    from bot.core.job import Job, JobState
    from bot.core.jobs import JobService
    from bot.core.poller import DELIVERY_CONCURRENCY, Poller, RateLimiter
    from bot.core.schedule import AdaptiveSchedule
    from bot.core.store import Store, jobs_table
    from bot.discord.endpoints import point_discord_py_at
    from bot.discord.notifier import DiscordNotifier

    n = sizes(quick)
    child = await asyncio.create_subprocess_exec(
        sys.executable, SELF, "--serve", *(["--quick"] if quick else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    world = json.loads(await child.stdout.readline())
    tmp = tempfile.TemporaryDirectory()
    try:
        point_discord_py_at(world["rest_base"], world["gateway_url"])
        client = discord.Client(intents=discord.Intents(guilds=True))
        client_task = asyncio.create_task(client.start(TOKEN))
        await asyncio.wait_for(client.wait_until_ready(), 30)
        store = await Store.open(f"sqlite+aiosqlite:///{tmp.name}/d.db")
        now = time.time()
        rows = []
        channels, statuses = world["channels"], world["statuses"]
        for i in range(n["jobs"]):
            c = i % len(channels)
            request = _request(i % 5)
            rows.append(
                {
                    "state": JobState.COMPLETED.value,
                    "model": request.model,
                    "request": request.model_dump(mode="json", exclude_none=True),
                    "origin": {
                        "kind": "discord",
                        "channel_id": str(channels[c]),
                        "message_id": str(statuses[c][i // len(channels)]),
                        "guild_id": str(world["guild"]),
                        "upload_limit": 10 * 1024 * 1024,
                    },
                    "requester": "1",
                    "guild_id": str(world["guild"]),
                    "task_id": f"task_d_{i}",
                    "progress": 100,
                    "created_at": now - 300,
                    "submitted_at": now - 300,
                    "finished_at": now - 10,
                    "video_urls": [f"{world['video']}/{i}.mp4"],
                    "cost": 0.4,
                    "delivered": False,
                }
            )
        async with store.engine.begin() as conn:
            await conn.execute(jobs_table.insert(), rows)
        clock = SystemClock()
        async with aiohttp.ClientSession() as session:
            delivered = asyncio.Event()
            count = [0]

            class Counting(DiscordNotifier):
                """Says when every result is out, so the bench need not poll the store."""

                async def job_finished(self, job: Job) -> None:
                    await super().job_finished(job)
                    count[0] += 1
                    if count[0] >= n["jobs"]:
                        delivered.set()

            # The video server is on 127.0.0.1: allowed here, as the tests allow the stand-in.
            notifier = Counting(
                client, session=session, clock=clock, fetch_policy=FetchPolicy(allow_local=True)
            )
            poller = Poller(
                None,  # type: ignore[arg-type]  # nothing is polled in this part
                store, notifier, clock, AdaptiveSchedule(), RateLimiter(clock, 20.0),
            )  # fmt: skip
            jobs = JobService(store=store, api=None, poller=poller, notifier=notifier, clock=clock)  # type: ignore[arg-type]
            running = []
            for i in range(n["running"]):
                c = i % len(channels)
                running.append(
                    Job(
                        id=10_000 + i,
                        state=JobState.RUNNING,
                        request=_request(i % 5),
                        created_at=now,
                        task_id=f"task_r_{i}",
                        origin={
                            "kind": "discord",
                            "channel_id": str(channels[c]),
                            "message_id": str(statuses[c][-1 - i // len(channels)]),
                        },
                    )
                )
            lag: list[float] = []
            busy: list[float] = []
            stop = asyncio.Event()
            monitor = asyncio.create_task(_lag(lag, busy, stop))
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            runner = asyncio.create_task(poller.run())
            started = time.monotonic()
            await jobs.resume()

            async def progress() -> None:
                step = 0
                while not stop.is_set():
                    step += 1
                    for job in running:
                        job.progress = min(99, step)
                        await notifier.job_progress(job)
                    await asyncio.sleep(1.0)

            pusher = asyncio.create_task(progress())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(delivered.wait(), 120 if quick else 300)
            took = time.monotonic() - started
            await asyncio.sleep(1.0)  # the last `delivered` writes
            stop.set()
            await asyncio.gather(monitor, pusher)
            await notifier.close()
            await poller.stop()
            await runner
            left = len([j for j in await store.unfinished() if not j.delivered])
            await store.close()
        await client.close()
        await asyncio.gather(client_task, return_exceptions=True)
        child.stdin.write(b"stats\n")
        await child.stdin.drain()
        stats = json.loads(await child.stdout.readline())
        lag.sort()
        return {
            "busy_max_ms": max(busy, default=0.0) * 1000,
            "load_avg": os.getloadavg()[0],
            "cpus": os.cpu_count(),
            **n,
            **stats,
            "delivery_concurrency": DELIVERY_CONCURRENCY,
            "undelivered": left,
            "took_s": took,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mb": rss0,
            "lag_p99_ms": lag[int(0.99 * (len(lag) - 1))] * 1000 if lag else 0.0,
            "lag_max_ms": lag[-1] * 1000 if lag else 0.0,
            "progress_dropped": notifier.channels.dropped,
        }
    finally:
        if child.returncode is None:
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
        tmp.cleanup()


def print_discord(d: dict[str, Any]) -> list[tuple[str, str, bool]]:
    print(
        f"\nDiscord - restart with {d['jobs']} undelivered 8 MB results in {d['channels']} "
        f"channels, {d['running']} running jobs sending progress (fake Discord enforces 5/5 s)"
    )
    rows = [
        ("delivered in (s)", f"{d['took_s']:.1f} ({d['undelivered']} left)"),
        ("results posted with the video", f"{d['results_with_video']}"),
        ("delivery concurrency", f"{d['delivery_concurrency']}"),
        ("peak RSS (MB), before deliveries", f"{d['rss_mb']:.0f}, {d['rss_before_mb']:.0f}"),
        ("event-loop lag p99 / max (ms), wall", f"{d['lag_p99_ms']:.1f} / {d['lag_max_ms']:.0f}"),
        ("  of it on the CPU in the loop, max (ms)", f"{d['busy_max_ms']:.0f}"),
        ("machine load average / CPUs", f"{d['load_avg']:.1f} / {d['cpus']}"),
        ("most requests to one channel in 5 s", f"{d['max_per_5s']}"),
        ("429s from the channel bucket", f"{d['rejected_429']}"),
        ("progress edits dropped for the budget", f"{d['progress_dropped']}"),
    ]
    for label, value in rows:
        print(f"  {label:<44} {value}")
    full = d["jobs"] >= 200
    tag = f"{d['jobs']} deliveries" + ("" if full else " (quick)")
    return [
        (f"{tag}: peak RSS <= 300 MB", f"{d['rss_mb']:.0f} MB", d["rss_mb"] <= 300),
        (
            f"{tag}: loop lag max <= 100 ms (busy)",
            f"{d['busy_max_ms']:.0f} ms (wall {d['lag_max_ms']:.0f})",
            d["busy_max_ms"] <= 100,
        ),
        (f"{tag}: all delivered", f"{d['undelivered']} left", d["undelivered"] == 0),
        ("no channel > 5 requests in any 5 s", f"max {d['max_per_5s']}", d["max_per_5s"] <= 5),
    ]


if __name__ == "__main__":
    if "--serve" in sys.argv:
        asyncio.run(serve("--quick" in sys.argv))
    else:
        print(json.dumps(asyncio.run(run_discord(quick="--quick" in sys.argv))))
    os._exit(0)
