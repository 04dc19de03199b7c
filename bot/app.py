"""`reelbot`: the one entry point, and the only module that knows every front end.

The terminal (`generate`, `models`, `check`, `fake-api`) and Discord (`run`, `sync`,
`commands`) each add their own verbs; this composition root assembles the parser and hands
the parsed command to whichever front end owns it, so the front ends never import each other.
Exit codes: 0 completed, 1 the task failed, 2 invalid input or settings (or a database
migrated by a newer reelbot), 3 the API refused or could not be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bot.core.config import SettingsError
from bot.core.migrations import SchemaTooNew
from bot.core.store import StoreUnavailable

EXIT_INVALID = 2


def _parser() -> argparse.ArgumentParser:
    from bot.discord import verbs
    from bot.terminal import cli

    parser = argparse.ArgumentParser(
        prog="reelbot",
        description="A Discord bot (and terminal tool) that makes short AI videos with APIMart.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli.add_commands(sub)
    verbs.add_commands(sub)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    from bot.terminal import cli

    code = cli.dispatch(args)
    if code is None:
        from bot.discord import verbs

        code = verbs.dispatch(args)
    if code is None:
        raise AssertionError(args.command)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = _dispatch(args)
    except (SettingsError, SchemaTooNew) as exc:
        print(exc, file=sys.stderr)
        code = EXIT_INVALID
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_INVALID
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
