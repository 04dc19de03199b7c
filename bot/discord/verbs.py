"""The Discord front end's `reelbot` verbs, registered without importing discord.py.

`reelbot generate` builds the same parser, and must not pay for (or depend on) discord.py:
the launcher is imported only when one of these verbs runs.
"""

from __future__ import annotations

from typing import Any


def add_commands(sub: Any) -> None:
    """The Discord front end's verbs, added to the `reelbot` parser by `bot.app`."""
    sub.add_parser(
        "run",
        help="start the Discord bot",
        description="Connect to Discord and serve /video until Ctrl-C or SIGTERM; open jobs "
        "resume at the next start. Needs DISCORD_TOKEN and APIMART_API_KEY.",
    )
    sync_cmd = sub.add_parser(
        "sync",
        help="register the slash commands with Discord",
        description="Register the slash commands (once, and after upgrades): with --guild in "
        "one server at once, without it globally (up to an hour). Needs DISCORD_TOKEN.",
    )
    sync_cmd.add_argument("--guild", type=int, help="a test server's id (instant); omit for global")
    sub.add_parser(
        "commands",
        help="print the JSON that `sync` sends",
        description="Print the slash-command JSON that `sync` sends, without a token or a "
        "connection.",
    )


def dispatch(args: Any) -> int | None:
    """Run a Discord verb; None when the verb belongs to another front end."""
    if args.command == "run":
        from bot.discord import launcher

        return launcher.run()
    if args.command == "sync":
        from bot.discord import launcher

        return launcher.sync(args.guild)
    if args.command == "commands":
        from bot.discord import launcher

        return launcher.print_commands()
    return None
