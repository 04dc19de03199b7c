"""`reelbot jobs` and `reelbot status`: nothing the terminal (or the bot) started is out of reach.

`status` looks a job up again at APIMart by job number or task id. It only ever *writes* a job
nobody else follows: an `unknown` one (its end was never learned) or a terminal job whose
terminal is gone. A job the running bot follows, or another live terminal, is only read: the
CLI never settles a job it does not own. A Discord job settled here is left undelivered, so the
bot posts its result (once) at its next start.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import replace
from typing import Any

from bot.core.apimart import ApimartError, TaskInfo
from bot.core.config import Settings
from bot.core.job import Job, JobState, outcome_record
from bot.core.owner import TERMINAL, owned_elsewhere, terminal_origin
from bot.core.poller import FixedSchedule
from bot.core.runtime import open_runtime
from bot.core.store import Store, open_store
from bot.terminal.cli import EXIT_API, EXIT_INVALID, EXIT_RUNNING, exit_code
from bot.terminal.generate import TerminalNotifier, format_outcome

_FINAL = {
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
}


async def list_jobs(settings: Settings, *, limit: int, as_json: bool) -> int:
    store = await open_store(settings.DATABASE_URL)
    try:
        jobs = await store.recent(limit=max(1, min(limit, 1000)))
    finally:
        await store.close()
    for job in jobs:
        if as_json:
            print(json.dumps({"job": job.id, "model": job.request.model, **job.outcome()}))
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(job.created_at))
        kind = job.origin.get("kind") or ("discord" if job.origin.get("channel_id") else "?")
        print(
            f"#{job.id:<5} {job.state.value:<10} {job.request.model:<18} {when}  {kind:<8} "
            f"task {job.task_id or '—'}"
        )
    if not jobs and not as_json:
        print("no jobs yet", file=sys.stderr)
    return 0


async def _find(store: Store, ref: str) -> Job | None:
    if ref.isdigit() and len(ref) < 12:
        return await store.get(int(ref))
    return await store.get_by_task(ref)


def _seen(job: Job, info: TaskInfo) -> Job:
    """A copy of `job` as APIMart's answer shows it (nothing stored)."""
    state = _FINAL.get(info.status, JobState.RUNNING)
    return replace(
        job,
        state=state,
        progress=info.progress if info.progress is not None else job.progress,
        cost=info.cost,
        credits_cost=info.credits_cost,
        video_urls=list(info.video_urls),
        expires_at=info.expires_at,
        run_seconds=info.actual_time,
        error_message=info.error_message,
    )


def _show(job: Job, *, as_json: bool, note: str | None = None) -> int:
    if as_json:
        print(json.dumps(job.outcome(), ensure_ascii=False))
    else:
        print(format_outcome(job))
    if note:
        print(f"note: {note}", file=sys.stderr)
    if not job.state.terminal and not as_json:
        print(f"still running at APIMart ({job.progress} %)", file=sys.stderr)
    return exit_code(job)


async def status(settings: Settings, ref: str, *, as_json: bool, timeout: float | None) -> int:
    ref = ref.strip()
    notifier = TerminalNotifier(quiet=True)
    schedule = FixedSchedule(0.0, settings.POLL_INTERVAL, settings.POLL_MAX_INTERVAL)
    async with open_runtime(settings, notifier, resume=False, schedule=schedule) as runtime:
        job = await _find(runtime.store, ref)
        if job is None and (ref.isdigit() or not ref):
            print(f"error: no job #{ref} in the database (see `reelbot jobs`)", file=sys.stderr)
            return EXIT_INVALID
        if job is not None:
            if job.task_id is None:
                return _show(job, as_json=as_json, note="APIMart never gave this job a task id.")
            if job.state.terminal and job.state is not JobState.UNKNOWN:
                return _show(job, as_json=as_json)  # its end is known and recorded
        task_id = job.task_id if job is not None else ref
        assert task_id is not None
        try:
            info = await runtime.api.get_task(task_id)
        except ApimartError as exc:
            print(f"error: APIMart could not show task {task_id}: {exc}", file=sys.stderr)
            return EXIT_API
        if job is None:
            return _show_task(info, as_json=as_json)
        now = runtime.clock.now()
        bots = job.state is JobState.RUNNING and job.origin.get("kind") != TERMINAL
        if bots or owned_elsewhere(job, now, runtime.worker_id):
            who = "the bot" if bots else "another reelbot generate"
            return _show(_seen(job, info), as_json=as_json, note=f"{who} follows this job.")
        if not info.terminal and timeout is None:
            if job.state is JobState.UNKNOWN:
                # Known to be running again: the bot's next start (or `status`) follows it.
                await runtime.jobs.follow_again(job, track=False)
            return _show(_seen(job, info), as_json=as_json)
        # Nobody follows it: this command does, until it ends (or `timeout`), and records it,
        # holding its lease meanwhile (so a bot starting now leaves it alone).
        claimed = await runtime.leases.claim_one(job.id)
        if claimed is None:
            return _show(
                _seen(job, info), as_json=as_json, note="another reelbot follows this job."
            )
        job = claimed
        if job.origin.get("kind") == TERMINAL:
            await runtime.store.update(job, origin=terminal_origin(now))
        waiter = notifier.waiter(job.id)
        if job.state is JobState.UNKNOWN:
            await runtime.jobs.follow_again(job)
        else:
            runtime.poller.track(job, started=job.submitted_at or job.created_at)
        try:
            async with asyncio.timeout(timeout or settings.API_TIMEOUT * 4):
                job = await waiter
        except TimeoutError:
            return _show(job, as_json=as_json)
        if job.origin.get("kind") != TERMINAL:
            await runtime.store.update(job, delivered=False)  # the bot posts it at its start
            await runtime.leases.release([(job, None)])  # at once, not in a lease
        return _show(job, as_json=as_json)
    raise AssertionError("unreachable")


def _show_task(info: TaskInfo, *, as_json: bool) -> int:
    """A task this database does not know (another machine's, or one lost before recording)."""
    status = info.status if info.terminal else "running"
    record: dict[str, Any] = outcome_record(
        task_id=info.task_id,
        status=status,
        video_urls=info.video_urls,
        expires_at=info.expires_at,
        cost=info.cost,
        credits_cost=info.credits_cost,
        elapsed_s=info.actual_time,
        error=info.error_message,
    )
    if as_json:
        print(json.dumps(record, ensure_ascii=False))
    else:
        print(f"{status}: task {info.task_id} (not in this database)")
        for url in info.video_urls:
            print(f"  video    {url}")
        if info.error_message:
            print(f"  error    {info.error_message}")
    if status == "completed" and info.video_urls:
        return 0
    return EXIT_RUNNING if status == "running" else 1
