"""A minimal progress bar for the command line (the core takes a callback and never imports it)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``progress(done, total)`` callback drawing one updating line on a terminal.

    Nothing is drawn until ``delay`` seconds have passed (short runs stay quiet) or when the
    stream is not a terminal (logs stay clean).
    """

    def __init__(self, label: str, stream: TextIO | None = None, delay: float = 1.0,
                 width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.delay = delay
        self.width = width
        self.start = time.monotonic()
        self.drawn = False
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        if elapsed < self.delay and done < total:
            return
        if elapsed < self.delay and not self.drawn:
            return
        filled = int(self.width * done / max(total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        eta = elapsed / done * (total - done) if done else 0.0
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} tiles "
                          f"{elapsed:6.1f} s (eta {eta:5.1f} s)")
        self.drawn = True
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
