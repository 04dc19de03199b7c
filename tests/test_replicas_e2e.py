"""Two unsharded workers on one PostgreSQL receive every interaction: each is answered once.

On Discord every session identified for a shard gets every INTERACTION_CREATE of its guilds:
two unsharded replicas (`docker compose up --scale reelbot=2`, or a rolling deploy) both get
each slash command and each click. The fake Discord does the same. Before claims, both workers
ran admission (two jobs, two reservations) and raced to acknowledge: the slower one's defer
met 40060 "already acknowledged" and logged an ERROR traceback; two clicks of Re-roll made
two new jobs. Now one worker claims each interaction in the database and the other drops it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.core.config import Settings
from bot.testing.fleet import Fleet, fleet

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.environ.get("REELBOT_TEST_POSTGRES_URL"),
        reason="several workers need PostgreSQL: set REELBOT_TEST_POSTGRES_URL (.ci/run does)",
    ),
]

SETTINGS = {
    "LEASE_SECONDS": "8",
    "POLL_INITIAL_DELAY": "0.3",
    "POLL_INTERVAL": "0.5",
    "POLL_MAX_INTERVAL": "1",
    "API_REQUESTS_PER_SECOND": "1000",
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[Fleet]:
    raw = os.environ["REELBOT_TEST_POSTGRES_URL"]
    url = Settings(_env_file=None, DATABASE_URL=raw).DATABASE_URL  # type: ignore[call-arg]
    # Tasks of 240 simulated seconds at 120×: 2 s each.
    async with fleet(url, tmp_path, settings=dict(SETTINGS), time_scale=120.0) as opened:
        yield opened


async def _until(what: str, world: Fleet, check: Any, timeout: float = 40.0) -> Any:
    try:
        async with asyncio.timeout(timeout):
            while not (found := await check()):
                await asyncio.sleep(0.2)
            return found
    except TimeoutError:
        raise AssertionError(f"{what}: timed out\n{world.logs()}") from None


async def _jobs(world: Fleet) -> list[dict[str, Any]]:
    assert world.store is not None
    query = sa.text("SELECT id, state, request, origin, delivered FROM jobs ORDER BY id")
    async with world.store.engine.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(query)).all()]


async def _usage(world: Fleet) -> tuple[int, int]:
    """(jobs counted, micro-dollars still reserved) over every usage row."""
    assert world.store is not None
    query = sa.text(
        "SELECT coalesce(sum(jobs), 0), coalesce(sum(reserved_micros), 0) FROM usage_daily"
    )
    async with world.store.engine.connect() as conn:
        row = (await conn.execute(query)).one()
    return int(row[0]), int(row[1])


def _tag_of(job: dict[str, Any]) -> int:
    prompt = str(job["request"]["prompt"])
    start = prompt.find("clip#")
    return int(prompt[start + 5 : start + 10])


async def test_two_replicas_answer_every_interaction_once(world: Fleet) -> None:
    await asyncio.gather(world.sync(globally=True), world.start_workers("replica-a", "replica-b"))
    sent: list[str] = []

    # 1. Eight /video commands at once (four in one server: the member's two slots run, two
    #    wait in the queue with a Cancel button), plus /video usage and /video models.
    commands = [world.slash_payload(g) for g in (0, 0, 0, 0, 1, 1, 2, 2)]
    extras = [world.slash_payload(0, subcommand="usage")[1]]
    extras.append(world.slash_payload(1, subcommand="models")[1])
    payloads = [p for _, p in commands] + extras
    sent += [p["id"] for p in payloads]
    await world.send_together(payloads)
    tags = [number for number, _ in commands]

    async def queued_with_cancel() -> dict[int, list[dict[str, Any]]] | None:
        queued = {j["id"] for j in await _jobs(world) if j["state"] == "queued"}
        shown = {k: v for k, v in world.messages_with_button("cancel").items() if k in queued}
        return shown if len(shown) >= 2 else None

    # 2. Cancel both queued jobs (one click each, at once).
    waiting = await _until("two queued jobs with a Cancel button", world, queued_with_cancel)
    cancels = [
        world.click_payload(messages[-1], f"reelbot:cancel:{job_id}")
        for job_id, messages in sorted(waiting.items())[:2]
    ]
    cancelled = sorted(waiting)[:2]
    sent += [p["id"] for p in cancels]
    await world.send_together(cancels)

    # 3. Once the six others are posted: Re-roll four of them, each clicked twice (the two
    #    clicks of a pair may reach different workers: still one new job), and ask Details of
    #    two, all at once.
    async def six_results() -> dict[int, list[dict[str, Any]]] | None:
        results = world.messages_with_button("details")
        return results if len(results) >= 6 else None

    results = await _until("six results", world, six_results)
    first = sorted(results)
    clicks = [
        world.click_payload(results[j][-1], f"reelbot:reroll:{j}")
        for j in first[:4]
        for _ in range(2)
    ]
    clicks += [world.click_payload(results[j][-1], f"reelbot:details:{j}") for j in first[4:6]]
    sent += [p["id"] for p in clicks]
    await world.send_together(clicks)

    async def all_delivered() -> bool:
        jobs = await _jobs(world)
        return len(jobs) >= 10 and all(j["delivered"] for j in jobs)

    await _until("every job delivered", world, all_delivered, timeout=60)
    await asyncio.sleep(1.5)  # a late duplicate would show now

    # Every interaction answered exactly once, never "already acknowledged".
    callbacks = world.callbacks()
    answered = {i: [status for status, _ in callbacks.get(i, [])] for i in sent}
    assert len(sent) == 22
    problems: list[str] = []
    print(
        f"{len(sent)} interactions: callbacks per interaction "
        f"{sorted(Counter(len(s) for s in answered.values()).items())}"
    )
    assert world.store is not None
    async with world.store.engine.connect() as conn:
        by_worker = dict(
            (
                await conn.execute(
                    sa.text("SELECT worker, count(*) FROM interaction_claims GROUP BY worker")
                )
            ).all()
        )
    print(f"claims won per worker: {sorted(by_worker.values())}")
    if not all(statuses and statuses[0] < 300 for statuses in answered.values()):
        problems.append(f"an interaction was not acknowledged: {answered}")
    doubled = {i: s for i, s in answered.items() if len(s) != 1}
    if doubled:
        problems.append(f"answered more than once (400 = 40060 for the loser): {doubled}")
    # Exactly one job per command and per re-roll, each counted once in the usage ledger
    # (a job cancelled in the queue was never sent, and is not counted) and nothing left
    # reserved.
    jobs = await _jobs(world)
    per_tag = Counter(_tag_of(j) for j in jobs)
    rerolled = {_tag_of(j) for j in jobs if j["id"] in first[:4]}
    expected = {t: 2 if t in rerolled else 1 for t in tags}
    if dict(per_tag) != expected:
        problems.append(f"jobs per command {dict(per_tag)}, expected {expected}")
    counted, reserved = await _usage(world)
    if (counted, reserved) != (len(expected) + len(rerolled) - len(cancelled), 0):
        problems.append(f"usage rows count {counted} jobs, {reserved} µ$ still reserved")
    if sorted(j["id"] for j in jobs if j["state"] == "cancelled") != cancelled:
        problems.append(f"cancelled: {[j['id'] for j in jobs if j['state'] == 'cancelled']}")
    # One result message for every job that ran.
    results = world.messages_with_button("details")
    ran = [j["id"] for j in jobs if j["state"] == "completed"]
    if len(ran) != len(expected) + len(rerolled) - len(cancelled):
        problems.append(f"{len(ran)} jobs completed")
    if {j: len(results.get(j, [])) for j in ran} != dict.fromkeys(ran, 1):
        problems.append(f"results: { ({j: len(results.get(j, [])) for j in ran}) }")
    # Nobody logged a traceback for an interaction someone else answered.
    full = {w.name: w.log.read_text(errors="replace") for w in world.workers}
    tracebacks = sum(text.count("Traceback") for text in full.values())
    if tracebacks:
        problems.append(f"{tracebacks} tracebacks in the workers' logs")
    assert not problems, "\n".join(problems) + "\n" + world.logs()


@pytest.fixture
async def one_channel(tmp_path: Path) -> AsyncIterator[Fleet]:
    """One server, one channel, and a fake Discord that enforces 5 requests per 5 s there."""
    raw = os.environ["REELBOT_TEST_POSTGRES_URL"]
    url = Settings(_env_file=None, DATABASE_URL=raw).DATABASE_URL  # type: ignore[call-arg]
    options: dict[str, Any] = {
        "guilds": 1,
        "settings": dict(SETTINGS),
        "discord_options": {"channel_limit": (5, 5.0)},
    }
    async with fleet(url, tmp_path, **options) as opened:
        yield opened


async def test_two_workers_share_one_channel_budget(one_channel: Fleet) -> None:
    """Nine jobs held by two workers end together in one channel: Discord's bucket belongs
    to the bot token, so the two together may send 5 per 5 s, not 5 each."""
    world = one_channel
    a, b = await world.start_workers("replica-a", "replica-b")
    # 180 simulated seconds at 60×: all end about 3 s from now, after both hold a share.
    tags = await world.add_running(9, [180.0])

    async def shared_out() -> bool:
        owners = {r["owner"] for r in await world.rows() if not r["delivered"]}
        return {a.worker_id, b.worker_id} <= owners

    await _until("both workers holding jobs", world, shared_out, timeout=10)
    try:
        async with asyncio.timeout(40):
            while await world.open_jobs():
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise AssertionError(f"jobs left undelivered\n{world.logs()}") from None
    await asyncio.sleep(1.0)

    buckets = world.discord.channel_buckets
    assert buckets is not None
    most, refused = buckets.max_in_window(), buckets.rejected
    posters = Counter(r["owner"] for r in await world.rows())
    print(f"most requests in one 5 s window: {most}; 429s: {refused}; owners {posters}")
    results = world.results()
    assert {t: results.get(t, 0) for t in tags} == dict.fromkeys(tags, 1)
    assert (most, refused) == (5, 0), world.logs()


async def test_a_replica_that_is_stopping_leaves_new_commands_to_the_others(
    world: Fleet,
) -> None:
    """A rolling deploy SIGTERMs a replica; it drains (up to API_TIMEOUT) while still
    connected. Commands arriving then were claimed by the stopping replica, acknowledged, and
    failed at once: "reelbot stopped before this job was sent to APIMart", though another
    replica was live. Now a stopping replica steps aside and the live one takes them."""
    await asyncio.gather(world.sync(globally=True), world.start_workers("replica-a", "replica-b"))
    # One command whose submit is held: the replica that takes it drains for a while.
    world.api.inject("submit", 200, delay=4.0)
    (first,) = await world.slash(1)

    async def claimed() -> str | None:
        assert world.store is not None
        query = sa.text("SELECT worker FROM interaction_claims")
        async with world.store.engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    owner = await _until("the first command claimed", world, claimed, timeout=10)
    stopping = next(w for w in world.workers if w.worker_id == owner)
    stopping.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)  # it is draining now: still connected, still receiving
    commands = [world.slash_payload(g) for g in (0, 1, 2, 0, 1, 2)]
    await world.send_together([p for _, p in commands])

    async def all_delivered() -> bool:
        jobs = await _jobs(world)
        return len(jobs) == 7 and all(j["delivered"] for j in jobs)

    await _until("every job delivered", world, all_delivered, timeout=40)
    callbacks = world.callbacks()
    answered = {p["id"]: [s for s, _ in callbacks.get(p["id"], [])] for _, p in commands}
    jobs = [j for j in await _jobs(world) if _tag_of(j) != first]
    states = Counter(j["state"] for j in jobs)
    assert all(len(s) == 1 and s[0] < 300 for s in answered.values()), answered
    assert states == {"completed": 6}, f"{states}\n{world.logs()}"
