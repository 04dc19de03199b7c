"""`reelbot run`, `reelbot sync`, `reelbot commands`: start, register, describe the bot.

Each function returns a process exit code; `SettingsError` propagates so the CLI prints the
list of problems and exits 2. Commands are synced only on demand (`sync`), never on start:
Discord rate-limits command creation, and a restart must not re-register anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from typing import Any

import aiohttp
import discord

from bot.core import interrupts
from bot.core.config import Settings, load_settings
from bot.core.job import Job
from bot.core.logs import setup_logging_from
from bot.core.workers import AlreadyRunning
from bot.discord.endpoints import point_discord_py_at

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
#: As for the API: the other side could not be reached.
EXIT_UNREACHABLE = 3
#: What "Discord could not be reached" looks like from discord.py (DNS, refused, timeout).
UNREACHABLE = (aiohttp.ClientConnectionError, TimeoutError, discord.GatewayNotFound)


def _unreachable(exc: BaseException) -> str:
    return f"Discord could not be reached ({type(exc).__name__}); check the network and try again"


class _NotConnected:
    """The notifier until the bot's own is bound in `setup_hook`.

    `resume=False` means nothing is delivered before that; should anything be, raising makes
    the poller retry the delivery later instead of dropping it.
    """

    async def job_progress(self, job: Job) -> None:
        return None

    async def job_finished(self, job: Job) -> None:
        raise RuntimeError("Discord is not connected yet")


def point_at_configured_discord(settings: Settings) -> None:
    """Send discord.py to a REST proxy or a local fake Discord when the settings name one."""
    if not settings.DISCORD_API_BASE and not settings.DISCORD_GATEWAY_URL:
        return
    rest = settings.DISCORD_API_BASE or discord.http.Route.BASE
    gateway = settings.DISCORD_GATEWAY_URL or str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    point_discord_py_at(rest, gateway)
    log.info("using Discord at %s (gateway %s)", rest, gateway)


def run() -> int:
    """Start the bot and run until SIGTERM/SIGINT; open jobs stay resumable."""
    settings = load_settings(require=("DISCORD_TOKEN", "APIMART_API_KEY"))
    setup_logging_from(settings)
    point_at_configured_discord(settings)
    try:
        return asyncio.run(_run(settings))
    except UNREACHABLE as exc:
        print(f"error: {_unreachable(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except discord.LoginFailure:
        log.error("Discord refused DISCORD_TOKEN; reset it in the developer portal")
        return EXIT_FAILED
    except discord.PrivilegedIntentsRequired as exc:
        log.error("Discord refused the gateway intents: %s", exc)
        return EXIT_FAILED
    except AlreadyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _run(settings: Settings) -> int:
    from bot.core.runtime import open_runtime
    from bot.discord.bot import make_bot

    assert settings.DISCORD_TOKEN is not None
    token = settings.DISCORD_TOKEN.get_secret_value()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if interrupts.pending() is not None:
        stop.set()  # asked to stop while starting: start nothing, leave cleanly
    async with contextlib.AsyncExitStack() as stack:
        try:
            runtime = await stack.enter_async_context(
                open_runtime(
                    settings,
                    _NotConnected(),
                    resume=False,
                    serve_http=True,
                    expect_ready=("gateway",),
                    role="bot",
                )
            )
        except OSError as exc:  # the database refuses, a file system error…
            log.error("cannot start: %s", exc)
            return EXIT_FAILED
        bot = make_bot(runtime, settings)
        async with bot:
            runner = asyncio.create_task(bot.start(token), name="reelbot-discord")
            stopper = asyncio.create_task(stop.wait(), name="reelbot-signal")
            done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if runner in done:
                stopper.cancel()
                runner.result()
                return EXIT_OK
            # The poller first: it gives polls and deliveries under way a few seconds to finish
            # (`Poller._drain`), and a delivery needs Discord's HTTP session until its very
            # last edit. Closing the bot first made that edit fail, the job stay undelivered,
            # and the result be posted a second time after the restart.
            # Unready at once, so a load balancer stops sending webhooks here while we drain.
            runtime.readiness.add("shutdown", lambda: "stopping", ttl=0.0)
            # Still connected while draining: new commands go to the other replicas, if any.
            if runtime.interaction_claims is not None:
                runtime.interaction_claims.step_aside()
            # Submits already sent first: one may be billed, and its task id must be recorded
            # (and followed after the restart). New ones are refused, nothing charged.
            log.info(
                "stopping: waiting for submits under way (at most %.0f s)", settings.API_TIMEOUT
            )
            await runtime.jobs.drain(settings.API_TIMEOUT)
            log.info("stopping: draining the poller, then closing the Discord connection")
            await runtime.stop_work()
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
    log.info("stopped cleanly; unfinished jobs resume on the next start")
    return EXIT_OK


def sync(guild_id: int | None) -> int:
    """Register the slash commands: to one server at once, or globally (up to an hour)."""
    settings = load_settings(require=("DISCORD_TOKEN",))
    setup_logging_from(settings)
    point_at_configured_discord(settings)
    try:
        synced = asyncio.run(_sync(settings, guild_id))
    except UNREACHABLE as exc:
        print(f"error: {_unreachable(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except discord.LoginFailure:
        print("error: Discord refused DISCORD_TOKEN", file=sys.stderr)
        return EXIT_FAILED
    except discord.HTTPException as exc:
        print(f"error: Discord refused the commands: {exc}", file=sys.stderr)
        return EXIT_FAILED
    where = f"server {guild_id}" if guild_id else "all servers (may take up to an hour)"
    print(f"synced {len(synced)} command(s) to {where}: {', '.join('/' + n for n in synced)}")
    return EXIT_OK


async def _sync(settings: Settings, guild_id: int | None) -> list[str]:
    """Log in over REST only (no gateway connection) and PUT the command list."""
    from bot.discord.bot import ReelBot

    assert settings.DISCORD_TOKEN is not None
    bot = ReelBot(runtime=None)
    async with bot:
        await bot.login(settings.DISCORD_TOKEN.get_secret_value())
        guild = discord.Object(id=guild_id) if guild_id else None
        if guild is not None:
            bot.tree.copy_global_to(guild=guild)
        commands = await bot.tree.sync(guild=guild)
    return [c.name for c in commands]


def command_payload() -> list[dict[str, Any]]:
    """The JSON list `sync` sends, built without a token or a connection."""
    return asyncio.run(_command_payload())


async def _command_payload() -> list[dict[str, Any]]:
    from bot.discord.bot import ReelBot

    bot = ReelBot(runtime=None)
    await bot.setup_hook()
    tree = bot.tree
    return [cmd.to_dict(tree) for cmd in tree.get_commands()]


def print_commands() -> int:
    print(json.dumps(command_payload(), indent=2, ensure_ascii=False))
    return EXIT_OK
