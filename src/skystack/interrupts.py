"""SIGTERM and SIGHUP handled like Ctrl-C (SIGINT): the run stops through the same cleanup.

Python turns SIGINT into :class:`KeyboardInterrupt`, so every ``except BaseException`` /
``finally`` on the way out removes its temporary file and releases its lock; SIGTERM (``kill``,
a batch system's time limit) and SIGHUP (the terminal closed) would otherwise end the process
at once and leave them behind. Inside :func:`signals_interrupt` both raise :class:`Interrupted`,
a ``KeyboardInterrupt`` that remembers its signal, and :func:`exit_code` gives the shell's
convention for a process ended by a signal: 128 + its number (130, 143, 129).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Interrupted", "exit_code", "signal_name", "signals_interrupt"]

HANDLED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A run stopped by the signal ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _raise(signum, frame):
    raise Interrupted(signum)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread (the
    previous handlers are restored after). Outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + getattr(exc, "signum", signal.SIGINT)
