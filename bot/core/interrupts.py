"""Ctrl-C and SIGTERM while reelbot is still starting: remembered, then acted on at a safe point.

Python raises KeyboardInterrupt wherever the main thread happens to be. During start-up that is
often inside the import machinery, where the interpreter swallows it ("Exception ignored in
…_get_module_lock…") and the command carries on as if nothing was asked: a Ctrl-C lost. So
from the first line of `main` the two signals only set a flag; each command then acts on it at
a point of its choosing: the terminal's verbs by restoring the usual handler (`resume`, which
raises KeyboardInterrupt at once if a signal came), `generate` and `run` when their event loop
installs its own handlers (`pending`).
"""

from __future__ import annotations

import signal
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: signal.Signals | None = None


def _remember(signum: int, _frame: FrameType | None) -> None:
    global _pending
    _pending = signal.Signals(signum)


def defer() -> None:
    """From now on SIGINT and SIGTERM are only remembered."""
    for sig in _SIGNALS:
        signal.signal(sig, _remember)


def pending() -> signal.Signals | None:
    """The signal that arrived while deferred, if any."""
    return _pending


def resume() -> None:
    """Both signals raise KeyboardInterrupt again; one that already came is raised now."""
    for sig in _SIGNALS:
        signal.signal(sig, signal.default_int_handler)
    if _pending is not None:
        raise KeyboardInterrupt
