"""`reelbot`: the one entry point, and the only module that knows every front end.

The terminal (`generate`, `models`, `check`, `fake-api`) and Discord (`run`, `sync`,
`commands`) each add their own verbs; this composition root assembles the parser and hands
the parsed command to whichever front end owns it, so the front ends never import each other.
Exit codes: 0 completed, 1 the task failed, 2 invalid input or settings (or a database
migrated by a newer reelbot), 3 the API refused or could not be reached.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from bot.core import interrupts

EXIT_INVALID = 2


def version() -> str:
    """The installed distribution's version (pyproject.toml is its one source)."""
    try:
        return metadata.version("reelbot")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    """The `reelbot` parser, with every front end's verbs."""
    from bot.discord import verbs
    from bot.terminal import cli

    parser = argparse.ArgumentParser(
        prog="reelbot",
        description="A Discord bot (and terminal tool) that makes short AI videos with APIMart.",
        epilog="`reelbot COMMAND --help` describes one command.",
    )
    parser.add_argument("--version", action="version", version=f"reelbot {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli.add_commands(sub)
    verbs.add_commands(sub)
    return parser


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's own parser (for its usage errors and help), by name."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _suggest(word: str, options: Sequence[str]) -> str:
    """` (did you mean X?)`; a swap of letters (`--modle`) beats a dropped one (`--mode`)."""
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.6)
    swapped = [c for c in close if sorted(c) == sorted(word)]
    best = (swapped or close)[:1]
    return f" (did you mean {best[0]}?)" if best else ""


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse like argparse, but a usage error names the subcommand and suggests a spelling.

    argparse reports an unknown option of a subcommand with the *top-level* usage; here it is
    the subcommand's parser that complains (its usage, its options), exit code 2.
    """
    parser = _parser()
    by_name = commands(parser)
    args_list = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in args_list if not a.startswith("-")), None)
    if first is not None and first not in by_name:
        parser.error(f"unknown command {first!r}{_suggest(first, list(by_name))}")
    args, extras = parser.parse_known_args(args_list)
    if extras:
        command = by_name[args.command]
        options = [opt for action in command._actions for opt in action.option_strings]
        unknown = [e for e in extras if e.startswith("-")]
        hint = _suggest(unknown[0].split("=", 1)[0], options) if unknown else ""
        command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    return args


#: Verbs whose event loop takes SIGINT/SIGTERM over and acts on one that came earlier.
OWN_SIGNALS = frozenset({"generate", "run"})


def _dispatch(args: argparse.Namespace) -> int:
    from bot.terminal import cli

    if args.command not in OWN_SIGNALS:
        interrupts.resume()
    code = cli.dispatch(args)
    if code is None:
        from bot.discord import verbs

        code = verbs.dispatch(args)
    if code is None:
        raise AssertionError(args.command)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    """Run one command. Ctrl-C at any moment ends it with 130 and no traceback: the heavy
    imports happen in here (not at module level, where the `reelbot` script imports this),
    and an interrupt before `generate` got going says that nothing was sent."""
    # Until a command is ready for them, Ctrl-C and SIGTERM are only remembered (a
    # KeyboardInterrupt raised inside an import is swallowed by the interpreter); SIGTERM is
    # then a Ctrl-C: the same clean exit 130 and words, not a silent death by signal.
    interrupts.defer()
    args: argparse.Namespace | None = None
    try:
        from bot.core.config import SettingsError
        from bot.core.migrations import SchemaTooNew
        from bot.core.store import StoreUnavailable

        args = parse(argv)
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
        if args is None:
            words = list(sys.argv[1:] if argv is None else argv)
            if "generate" in words:
                from bot.terminal.interrupted import report_interrupted_before_start

                report_interrupted_before_start(as_json="--json" in words)
    except BrokenPipeError:
        # `reelbot models | head`: the reader has gone, which is no reason for a traceback.
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)
