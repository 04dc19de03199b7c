"""A Ctrl-C during start-up is remembered and acted on, never swallowed inside an import."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from bot.core import interrupts


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    interrupts._pending = None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_deferred_is_remembered_then_raised_on_resume(sig: signal.Signals) -> None:
    interrupts.defer()
    os.kill(os.getpid(), sig)  # would have raised (or killed us) right here before
    assert interrupts.pending() is sig
    with pytest.raises(KeyboardInterrupt):
        interrupts.resume()
    assert signal.getsignal(sig) is signal.default_int_handler


def test_resume_without_a_signal_only_restores_the_handlers() -> None:
    interrupts.defer()
    interrupts.resume()
    assert interrupts.pending() is None
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
