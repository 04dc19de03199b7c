"""Several real `reelbot run` workers on one PostgreSQL: nothing twice, nothing lost.

Three workers share 300 jobs across 3 servers (most already submitted, the rest by slash
commands that every worker receives and one acknowledges); one is SIGKILLed in the middle and
a fresh one started. A rolling deploy starts worker B while A runs 50 jobs, then SIGTERMs A.
The stand-in APIMart logs every poll with its time and the worker that sent it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.core.claimer import CLAIM_EVERY
from bot.core.config import Settings
from bot.testing.fleet import Fleet, fleet

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("REELBOT_TEST_POSTGRES_URL"),
        reason="several workers need PostgreSQL: set REELBOT_TEST_POSTGRES_URL (.ci/run does)",
    ),
]

LEASE = 8.0
POLL_MAX = 2.0
SETTINGS = {
    "LEASE_SECONDS": str(LEASE),
    "POLL_INITIAL_DELAY": "0.5",
    "POLL_INTERVAL": "1",
    "POLL_MAX_INTERVAL": str(POLL_MAX),
    "API_REQUESTS_PER_SECOND": "1000",
    # A worker taking over ~100 jobs polls them all at once: not behind 16 slots.
    "POLL_CONCURRENCY": "64",
}
#: Seconds a loaded 2-core machine may add to a takeover (claim rounds, polls queued).
SLACK = 4.0
#: Seconds of real time, at the fleet's time scale (60): jobs of 8–20 s.
DURATIONS = [480.0, 600.0, 720.0, 900.0, 1200.0]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Fleet]:
    raw = os.environ["REELBOT_TEST_POSTGRES_URL"]
    url = Settings(_env_file=None, DATABASE_URL=raw).DATABASE_URL  # type: ignore[call-arg]
    # 300 results at Discord's 5 per channel per 5 s: 24 channels over the 3 guilds, else
    # the shared per-channel budget alone takes ~110 s.
    async with fleet(url, tmp_path, settings=dict(SETTINGS), channels_per_guild=8) as opened:
        yield opened


async def _until_all_delivered(world: Fleet, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            while await world.open_jobs():
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise AssertionError(f"jobs left undelivered\n{world.logs()}") from None


def _check_once_each(world: Fleet, tags: list[int], interactive: list[int]) -> None:
    results = world.results()
    missing = [t for t in tags if results.get(t, 0) == 0]
    doubled = {t: n for t, n in results.items() if n > 1}
    assert not missing, f"no result for {missing[:10]}"
    assert not doubled, f"results posted more than once: {doubled}"
    submits = world.submits_by_tag()
    assert all(submits.get(t) == 1 for t in interactive), submits
    worker_submits = [
        r for r in world.api.request_log if r.method == "POST" and r.agent.startswith("reelbot (")
    ]
    assert len(worker_submits) == len(interactive)  # the pre-submitted jobs: never again


def _switches_within_claims(world: Fleet, rows: list[dict[str, Any]]) -> None:
    """A job changes hands only through a claim (which bumps its fence): the runs of polls by
    one worker never outnumber its claims, so no two workers polled it inside one lease."""
    polls = world.polls()
    for row in rows:
        sequence = [worker for _, worker in polls.get(row["task_id"], [])]
        runs = sum(1 for i, w in enumerate(sequence) if i == 0 or sequence[i - 1] != w)
        assert runs <= row["fence"], (row["id"], sequence, row["fence"])


async def test_three_workers_300_jobs_one_killed_and_replaced(world: Fleet) -> None:
    await world.sync()
    workers = [await world.start_worker(f"worker-{n}") for n in range(3)]
    tags = await world.add_running(285, DURATIONS)
    interactive = await world.slash(15)
    tags += interactive

    await asyncio.sleep(4.0)  # everyone is polling its share
    victim = workers[1]
    assert victim.worker_id is not None
    killed_at = await world.kill(victim)
    orphans = [r for r in await world.owned_by(victim.worker_id) if r["state"] == "running"]
    assert orphans, "the killed worker held no running job: the test proves nothing"
    await world.start_worker("worker-fresh")

    await _until_all_delivered(world, timeout=120)
    await asyncio.sleep(2.0)  # a duplicate would arrive now
    _check_once_each(world, tags, interactive)

    polls = world.polls()
    delays = []
    for row in orphans:
        after = [at for at, w in polls[row["task_id"]] if at > killed_at and w != victim.worker_id]
        assert after, f"job {row['id']} was never polled again"
        delays.append(after[0] - killed_at)
    # The lease, one claim round, one poll interval; plus slack for a loaded CI machine (two
    # cores, four bots, PostgreSQL and both fakes: a claim round there can take seconds).
    bound = LEASE + CLAIM_EVERY + POLL_MAX + SLACK
    assert max(delays) <= bound, sorted(delays)[-5:]
    # Nothing from the dead (a request already on the wire may land a moment later).
    assert not [
        at
        for task in polls.values()
        for at, w in task
        if w == victim.worker_id and at > killed_at + 0.5
    ]
    _switches_within_claims(world, await world.rows())
    print(
        f"takeover of {len(orphans)} jobs: p50 {sorted(delays)[len(delays) // 2]:.2f}s "
        f"max {max(delays):.2f}s (bound {bound:.1f}s)"
    )


async def test_rolling_deploy_hands_every_job_over_once(world: Fleet) -> None:
    await world.sync()
    old = await world.start_worker("old")
    tags = await world.add_running(45, DURATIONS)
    interactive = await world.slash(5)
    tags += interactive
    await asyncio.sleep(2.0)
    await world.start_worker("new")  # the new container starts before the old one stops
    await asyncio.sleep(2.0)
    stopped_at = time.monotonic()
    assert await world.terminate(old) == 0

    await _until_all_delivered(world, timeout=90)
    await asyncio.sleep(2.0)
    _check_once_each(world, tags, interactive)
    _switches_within_claims(world, await world.rows())
    late = [
        at - stopped_at
        for polls in world.polls().values()
        for at, worker in polls
        if worker == old.worker_id and at > stopped_at + 10.0
    ]
    assert not late  # the old worker let go (its drain is bounded)
