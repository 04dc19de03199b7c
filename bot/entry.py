"""The `reelbot` script and `python -m bot` start here: signals deferred before any import.

`bot.app` imports argparse, difflib and `importlib.metadata` (which pulls in `email`,
`random`, …) at module level: a tenth of a second, longer on a loaded machine. A Ctrl-C in
that window met Python's default handler and printed a 20-line traceback from inside the
import machinery, before `bot.app.main` could install `interrupts.defer`. Here the only module
loaded first is `bot.core.interrupts` (it imports nothing but `signal`), so from the first
line of reelbot's own code both signals are only remembered, and `main` acts on them.
"""

from __future__ import annotations


def main() -> None:
    from bot.core import interrupts

    interrupts.defer()
    from bot.app import main as run

    run()
