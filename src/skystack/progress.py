"""Progress on the command line: a tile bar (:class:`ProgressBar`) and the night's per-product
line (:class:`NightProgress`); the core takes a callback and never imports this."""

from __future__ import annotations

import sys
import threading
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


class NightProgress:
    """The night's progress on a terminal: one updating line per product being built, e.g.
    ``[2/5] stacks/M67_V.fits  12 frames  3.4 s  (night 10.2 s, eta 20.5 s)``.

    ``products``: (name, frames) of every planned product, in build order. The ETA is the
    time per frame of the products finished, times the frames left (the current product's
    included), less the time the current product has run; ``eta ?`` before the first product
    ends. Drawn on ``stream``
    (default stderr) only when it is a terminal: otherwise nothing is written (the night's
    log lines say what was built). ``tick``: seconds between redraws while a product runs
    (None: redrawn only at start); ``clock``: seconds, monotonic (tests give a fake one).
    """

    def __init__(self, products: list[tuple[str, int]], stream: TextIO | None = None,
                 tick: float | None = 1.0, clock=time.monotonic) -> None:
        self.products = products
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.clock = clock
        self.tick = tick
        self.t0 = clock()
        self.frames_done = 0
        self.current: int | None = None
        self.started = self.t0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self) -> str:
        """The text of the current product's line (no control characters)."""
        name, frames = self.products[self.current]
        now = self.clock()
        night = now - self.t0
        left = sum(n for _, n in self.products[self.current:])
        if self.frames_done:
            per_frame = (self.started - self.t0) / self.frames_done
            eta = f"eta {max(0.0, per_frame * left - (now - self.started)):.1f} s"
        else:
            eta = "eta ?"
        return (f"[{self.current + 1}/{len(self.products)}] {name}  {frames} frames  "
                f"{now - self.started:.1f} s  (night {night:.1f} s, {eta})")

    def _draw(self) -> None:
        with self._lock:
            if self.current is not None:
                self.stream.write("\r\x1b[K" + self.line())
                self.stream.flush()

    def start(self, index: int) -> None:
        """Product ``index`` (of ``products``) begins."""
        if not self.enabled:
            return
        self.current, self.started = index, self.clock()
        self._draw()
        if self.tick and self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="skystack-night-progress")
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            self._draw()

    def above(self, write, text: str) -> None:
        """``write(text)`` (a log line) with the progress line cleared first and drawn again
        after it, so that the two do not mix on the terminal."""
        if not self.enabled:
            write(text)
            return
        with self._lock:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            write(text)
        self._draw()

    def finish(self) -> None:
        """The current product ended: its frames count as done, and the line is cleared so
        that the night's log line for it prints cleanly."""
        if not self.enabled or self.current is None:
            return
        with self._lock:
            self.frames_done += self.products[self.current][1]
            self.current = None
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        """Stop redrawing (the line is cleared)."""
        self.finish()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
