"""Several real `reelbot run` processes on one PostgreSQL, against the local fakes.

The fake Discord (gateway + REST) and the stand-in APIMart run in the calling process, so they
outlive a worker that is killed and can count what reached them: every poll with its time and
the worker that sent it (the User-Agent names it), every submit, every result message. Used by
the multi-worker end-to-end tests and by `bench/workers.py`.

Jobs enter the way they would in production: by slash commands (`slash`, which every connected
worker receives, and the one that acknowledges it first runs), or, for volume, as jobs already
submitted — the task is submitted to the stand-in over HTTP and the row written as a running
job (`add_running`), exactly what a worker leaves behind after its submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa
from aiohttp import web

from bot.core.job import JobState
from bot.core.request import build_request
from bot.core.store import Store, jobs_table, metadata
from bot.testing.fake_apimart import FakeApimart, FakeTaskPlan
from bot.testing.fake_discord import FakeDiscord

API_KEY = "sk-fleet-secret-key-0123456789"
TOKEN = "fleet.discord.token.secret"
USER_ID = 555_000_000_000_000_077
SUBMIT_PATH = "/v1/videos/generations"


def tag(number: int) -> str:
    """The marker in a job's prompt that finds its result message again."""
    return f"clip#{number:05d}."


@dataclass
class Worker:
    name: str
    proc: asyncio.subprocess.Process
    log: Path
    #: Its id in the database and in the stand-in's request log (known once it registered).
    worker_id: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Fleet:
    database_url: str
    tmp: Path
    guilds: int = 3
    #: Text channels per guild: Discord allows 5 messages per channel per 5 s, so a test
    #: posting hundreds of results spreads them over more channels, as a big community would.
    channels_per_guild: int = 1
    time_scale: float = 60.0
    settings: dict[str, str] = field(default_factory=dict)
    #: Options for the fake Discord (`channel_limit=(5, 5.0)` enforces the channel bucket).
    discord_options: dict[str, Any] = field(default_factory=dict)
    api: FakeApimart = field(init=False)
    discord: FakeDiscord = field(init=False)
    api_url: str = ""
    channels: list[tuple[int, int]] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    store: Store | None = None
    #: Tag number → job id, for the jobs this fleet created.
    jobs: dict[int, int] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _next_tag: int = 0

    # -- the world --------------------------------------------------------------------------

    async def start(self) -> None:
        await reset_database(self.database_url)
        self.api = FakeApimart(api_key=API_KEY, time_scale=self.time_scale, balance=1e9)
        self._runner = web.AppRunner(self.api.app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.api_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.discord = FakeDiscord(token=TOKEN, **self.discord_options)
        by_guild: list[list[tuple[int, int]]] = []
        for number in range(self.guilds):
            guild = self.discord.add_guild(f"Reel Club {number}")
            guild_id = int(guild["id"])
            self.discord.add_member(guild_id, USER_ID, username="fox_fan")
            by_guild.append(
                [
                    (guild_id, int(self.discord.add_text_channel(guild_id, f"videos-{n}")["id"]))
                    for n in range(self.channels_per_guild)
                ]
            )
        # Round-robin over the guilds first: `channels[i]` for i < guilds is each guild's first.
        self.channels = [pair for rank in zip(*by_guild, strict=True) for pair in rank]
        await self.discord.start()
        self.store = await Store.open(self.database_url)
        self._session = aiohttp.ClientSession(headers={"User-Agent": "fleet-harness"})

    async def close(self) -> None:
        for worker in self.workers:
            if worker.proc.returncode is None:
                worker.proc.kill()
                await worker.proc.wait()
        if self._session is not None:
            await self._session.close()
        if self.store is not None:
            await self.store.close()
        await self.discord.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "APIMART_"))}
        env.update(
            DISCORD_TOKEN=TOKEN,
            APIMART_API_KEY=API_KEY,
            APIMART_BASE_URL=self.api_url,
            DATABASE_URL=self.database_url,
            DISCORD_API_BASE=self.discord.rest_base,
            DISCORD_GATEWAY_URL=self.discord.gateway_url,
            LOG_LEVEL="INFO",
            # Any free port for /healthz, /readyz, /metrics: several workers on one machine.
            HTTP_LISTEN="127.0.0.1:0",
        )
        env.update(self.settings)
        return env

    async def reelbot(self, name: str, *args: str, env: dict[str, str] | None = None) -> Worker:
        log = self.tmp / f"{name}.log"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            *args,
            cwd=self.tmp,
            env={**self.env(), **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log.open("wb"),
            stderr=asyncio.subprocess.STDOUT,
        )
        return Worker(name, proc, log)

    async def sync(self, *, globally: bool = False) -> None:
        """Register the slash commands in every guild (needed only for `slash`); `globally`:
        once for all guilds (one process instead of one per guild)."""
        if globally:
            sync = await self.reelbot("sync-global", "sync")
            if await sync.proc.wait() != 0:
                raise RuntimeError(sync.log.read_text(errors="replace")[-2000:])
            return
        for guild_id in dict.fromkeys(g for g, _ in self.channels):
            sync = await self.reelbot(f"sync-{guild_id}", "sync", "--guild", str(guild_id))
            if await sync.proc.wait() != 0:
                raise RuntimeError(sync.log.read_text(errors="replace")[-2000:])

    async def start_worker(
        self, name: str, *, timeout: float = 40.0, env: dict[str, str] | None = None
    ) -> Worker:
        """Start `reelbot run` and wait until it is connected and registered in `workers`.

        `env`: settings for this worker only (`SHARD_IDS`, say)."""
        return (await self.start_workers(name, timeout=timeout, env=env))[0]

    async def start_workers(
        self, *names: str, timeout: float = 40.0, env: dict[str, str] | None = None
    ) -> list[Worker]:
        """Start several `reelbot run` at once; wait until all are connected and registered."""
        ready = self.discord.ready_count
        started = [await self.reelbot(name, "run", env=env) for name in names]
        self.workers += started
        try:
            await self.discord.wait_connected(timeout=timeout, ready_count=ready + len(names))
            async with asyncio.timeout(timeout):
                for worker in started:
                    while worker.worker_id is None:
                        worker.worker_id = await self._worker_id(worker.pid)
                        if worker.worker_id is None:
                            await asyncio.sleep(0.1)
        except (TimeoutError, AssertionError) as exc:
            raise RuntimeError(f"{names} did not start:\n{self.logs()[-3000:]}") from exc
        return started

    async def _worker_id(self, pid: int) -> str | None:
        assert self.store is not None
        query = sa.text("SELECT id FROM workers WHERE pid = :pid AND kind = 'bot'")
        async with self.store.engine.connect() as conn:
            return (await conn.execute(query, {"pid": pid})).scalar()

    def logs(self) -> str:
        return "\n".join(
            f"--- {w.name}\n" + w.log.read_text(errors="replace")[-3000:] for w in self.workers
        )

    async def kill(self, worker: Worker) -> float:
        """SIGKILL: no goodbye, no release. Returns the monotonic time of the kill."""
        worker.proc.send_signal(signal.SIGKILL)
        at = time.monotonic()
        await worker.proc.wait()
        return at

    async def terminate(self, worker: Worker, timeout: float = 30.0) -> int:
        worker.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await worker.proc.wait()

    # -- jobs -------------------------------------------------------------------------------

    def _take_tag(self) -> int:
        self._next_tag += 1
        return self._next_tag

    async def add_running(self, count: int, durations: list[float]) -> list[int]:
        """`count` jobs already submitted, round-robin over the guilds; returns tag numbers."""
        return await self.insert_running(await self.submit_tasks(count, durations))

    async def submit_tasks(self, count: int, durations: list[float]) -> list[dict[str, Any]]:
        """Submit `count` tasks to the stand-in (as a worker would); the rows for them."""
        assert self._session is not None
        rows = []
        for index in range(count):
            number = self._take_tag()
            guild_id, channel_id = self.channels[index % len(self.channels)]
            request = build_request(model="sora-2", prompt=f"a fox {tag(number)}", duration=4)
            self.api.plan_next(FakeTaskPlan(duration_s=durations[index % len(durations)]))
            async with self._session.post(
                self.api_url + SUBMIT_PATH,
                json=request.to_payload(),
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as resp:
                body = await resp.json()
            now = time.time()
            rows.append(
                {
                    "tag": number,
                    "state": JobState.RUNNING.value,
                    "model": request.model,
                    "request": request.model_dump(mode="json", exclude_none=True),
                    "origin": {
                        "kind": "discord",
                        "channel_id": str(channel_id),
                        "guild_id": str(guild_id),
                        "requester_id": str(USER_ID),
                    },
                    "requester": str(USER_ID),
                    "guild_id": str(guild_id),
                    "task_id": body["data"][0]["task_id"],
                    "progress": 0,
                    "created_at": now,
                    "submitted_at": now,
                    "video_urls": [],
                    "delivered": False,
                    "fence": 0,
                }
            )
        return rows

    async def insert_running(self, rows: list[dict[str, Any]]) -> list[int]:
        """Write the rows as running jobs in one transaction (a row in `created` would be
        claimed, and settled as interrupted, by a worker between two writes — as it should)."""
        assert self.store is not None
        async with self.store.transaction() as conn:
            for row in rows:
                values = {k: v for k, v in row.items() if k != "tag"}
                inserted = await conn.execute(jobs_table.insert().values(**values))
                assert inserted.inserted_primary_key is not None
                self.jobs[row["tag"]] = int(inserted.inserted_primary_key[0])
        return [row["tag"] for row in rows]

    async def slash(self, count: int) -> list[int]:
        """`count` `/video sora` commands, round-robin over the guilds, sent to every worker."""
        tags = []
        for index in range(count):
            number = self._take_tag()
            guild_id, channel_id = self.channels[index % len(self.channels)]
            interaction = self.discord.slash_interaction(
                guild_id=guild_id,
                channel_id=channel_id,
                user_id=USER_ID,
                command_name="video",
                subcommand="sora",
                options={"prompt": f"a heron {tag(number)}", "duration": 4},
            )
            await self.discord.dispatch("INTERACTION_CREATE", interaction)
            tags.append(number)
        return tags

    def slash_payload(
        self, guild_index: int, *, user_id: int = USER_ID, subcommand: str = "sora"
    ) -> tuple[int, dict[str, Any]]:
        """One `/video <subcommand>` interaction (not yet sent): its tag number and payload.

        `sora` carries a tagged prompt (4 s); other subcommands take no options."""
        guild_id, channel_id = self.channels[guild_index % len(self.channels)]
        number = self._take_tag() if subcommand == "sora" else 0
        options = {"prompt": f"a heron {tag(number)}", "duration": 4} if number else {}
        payload = self.discord.slash_interaction(
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
            command_name="video",
            subcommand=subcommand,
            options=options,
        )
        return number, payload

    def click_payload(self, message: dict[str, Any], custom_id: str, user_id: int = USER_ID) -> Any:
        """A click on a button of `message` (a message the fake holds)."""
        channel_id = int(message["channel_id"])
        guild_id = next(g for g, c in self.channels if c == channel_id)
        return self.discord.component_interaction(
            message_id=int(message["id"]),
            custom_id=custom_id,
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
        )

    async def send_together(self, payloads: list[dict[str, Any]]) -> None:
        """Dispatch INTERACTION_CREATEs at once (every connected worker receives each)."""
        await asyncio.gather(
            *(self.discord.dispatch("INTERACTION_CREATE", payload) for payload in payloads)
        )

    # -- what happened ----------------------------------------------------------------------

    def callbacks(self) -> dict[str, list[tuple[int, Any]]]:
        """Interaction id → [(status, answer body)] of every callback request a worker sent."""
        by_id: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for record in self.discord.requests:
            parts = record.path.strip("/").split("/")
            if record.method == "POST" and len(parts) == 4 and parts[0] == "interactions":
                if parts[3] == "callback":
                    by_id[parts[1]].append((record.status, record.response))
        return dict(by_id)

    def messages_with_button(self, prefix: str) -> dict[int, list[dict[str, Any]]]:
        """Job id → the visible messages (any channel) carrying a `reelbot:<prefix>:<id>`
        button: `details` finds result messages, `cancel` a queued job's status message."""
        found: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for _, channel_id in self.channels:
            for message in self.discord.messages.get(channel_id, []):
                if int(message.get("flags") or 0) & 64:  # ephemeral: one member's view only
                    continue
                for row in message.get("components") or []:
                    for item in row.get("components") or []:
                        custom_id = str(item.get("custom_id") or "")
                        if custom_id.startswith(f"reelbot:{prefix}:"):
                            found[int(custom_id.rsplit(":", 1)[1])].append(message)
        return dict(found)

    async def open_jobs(self) -> int:
        assert self.store is not None
        query = sa.text("SELECT count(*) FROM jobs WHERE NOT delivered")
        async with self.store.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def rows(self) -> list[dict[str, Any]]:
        assert self.store is not None
        query = sa.text(
            "SELECT id, state, task_id, owner, fence, delivered, request FROM jobs ORDER BY id"
        )
        async with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def owned_by(self, worker_id: str) -> list[dict[str, Any]]:
        return [r for r in await self.rows() if r["owner"] == worker_id]

    def results(self) -> dict[int, int]:
        """Tag number → how many result messages (with a video) carry it, over all channels."""
        counts: dict[int, int] = defaultdict(int)
        for _, channel_id in self.channels:
            for message in self.discord.bot_messages(channel_id):
                text = json.dumps({k: message.get(k) for k in ("content", "embeds")})
                if ".mp4" not in text and not message.get("attachments"):
                    continue
                start = text.find("clip#")
                if start != -1:
                    counts[int(text[start + 5 : start + 10])] += 1
        return dict(counts)

    def submits_by_tag(self) -> dict[int, int]:
        counts: dict[int, int] = defaultdict(int)
        for body in self.api.submit_attempts:
            prompt = str(body.get("prompt", "")) if isinstance(body, dict) else ""
            start = prompt.find("clip#")
            if start != -1:
                counts[int(prompt[start + 5 : start + 10])] += 1
        return dict(counts)

    def polls(self) -> dict[str, list[tuple[float, str]]]:
        """Task id → [(monotonic time, worker id)] of every status request by a worker."""
        by_task: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for record in self.api.request_log:
            if record.method != "GET" or not record.path.startswith("/v1/tasks/"):
                continue
            if not record.agent.startswith("reelbot ("):
                continue
            by_task[record.path.rsplit("/", 1)[-1]].append((record.at, record.agent[9:-1]))
        return dict(by_task)


async def reset_database(url: str) -> None:
    """Empty the (test-only) database: every table this code knows, and Alembic's marker."""
    store_engine = (await Store.open(url)).engine
    async with store_engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    await store_engine.dispose()


@contextlib.asynccontextmanager
async def fleet(database_url: str, tmp: Path, **options: Any) -> Any:
    world = Fleet(database_url, tmp, **options)
    await world.start()
    try:
        yield world
    finally:
        await world.close()
