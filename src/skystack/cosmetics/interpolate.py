"""Cosmetic correction: the pixels of a bad-pixel map (hot, dead, low-response pixels and bad
columns, found by :mod:`skystack.night.defects`) replaced by values interpolated from their
good neighbours, instead of NaN (``--cosmetic interpolate``; the default stays ``mask``:
an interpolated value is not a measurement, and NaN lets the combination take the pixel from
the other frames, which a dithered stack of enough frames always can).

Rules, for a bad pixel at ``(r, c)`` (``step`` = 1, or 2 on a colour-filter-array frame with
``BAYERPAT``, so that only photosites of the same colour are used):

* **column** (the pixel ``step`` above or below is bad too: part of a bad column or cluster):
  linear interpolation along the row between the nearest good pixels left and right,
  ``c - k*step`` and ``c + k*step`` (``k`` up to ``MARGIN // step``), weighted by distance;
  one side only (a frame edge, or a wide cluster): that side's value;
* **isolated**: the median of its good 8-neighbours at distance ``step``.

"Good" is a finite value that is not in the map; values are taken from the frame before any
replacement (an interpolated value never feeds another). A pixel without good neighbours within
reach stays NaN. Reach is :data:`MARGIN` pixels, so a tile read with ``MARGIN`` pixels of
context on each side gives the same values as the whole frame
(:class:`skystack.night.calibrate.CalibratedSource`). Arrays are ``(row, col)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["COSMETIC_MODES", "MARGIN", "MODE_KEY", "cfa_step", "interpolate_bad",
           "mark_interpolated", "interpolation_cards"]

COSMETIC_MODES = ("mask", "interpolate")
MARGIN = 8  # pixels: the farthest neighbour used (columns), hence the context a tile needs
MODE_KEY = "COSMETIC"  # on a frame (and product) whose bad pixels were interpolated


def mark_interpolated(header) -> None:
    """Record on a frame's header (a copy) that its bad-pixel-map pixels were interpolated."""
    header[MODE_KEY] = ("interpolate", "bad pixels interpolated from good neighbours")


def interpolation_cards(header, frames: list) -> None:
    """Product cards: ``COSMETIC = 'interpolate'`` and ``NCOSMET`` (frames whose bad pixels
    were interpolated) when any was; nothing otherwise (bad pixels were NaN)."""
    n = sum(1 for f in frames if f.header is not None
            and f.header.get(MODE_KEY) == "interpolate")
    if n:
        header[MODE_KEY] = ("interpolate", "frames' bad pixels interpolated: not measured")
        header["NCOSMET"] = (n, "frames with interpolated bad pixels")


def cfa_step(header) -> int:
    """2 for a colour-filter-array frame (a ``BAYERPAT`` keyword: neighbours of the same colour
    are two pixels away), else 1."""
    return 2 if header is not None and "BAYERPAT" in header else 1


def interpolate_bad(block: np.ndarray, bad: np.ndarray, step: int = 1) -> int:
    """Replace ``block``'s pixels where ``bad`` is true (in place, float32) by the module's
    interpolation; returns how many got a value (the others are NaN)."""
    if step not in (1, 2):
        raise ValueError(f"step must be 1 or 2, not {step}")
    source = np.ascontiguousarray(block, np.float32).copy()
    return int(_fill(block, source, np.ascontiguousarray(bad, np.bool_), step, MARGIN // step))


@njit(nogil=True, cache=True)
def _fill(out, src, bad, step, reach):  # pragma: no cover - compiled
    rows, cols = src.shape
    nb = np.empty(8, np.float32)
    filled = 0
    for r in range(rows):
        for c in range(cols):
            if not bad[r, c]:
                continue
            value = np.float32(np.nan)
            column = ((r - step >= 0 and bad[r - step, c])
                      or (r + step < rows and bad[r + step, c]))
            if column:
                left = np.float32(np.nan)
                dl = 0
                for k in range(1, reach + 1):
                    j = c - k * step
                    if j < 0:
                        break
                    v = src[r, j]
                    if not bad[r, j] and v - v == 0:
                        left, dl = v, k
                        break
                right = np.float32(np.nan)
                dr = 0
                for k in range(1, reach + 1):
                    j = c + k * step
                    if j >= cols:
                        break
                    v = src[r, j]
                    if not bad[r, j] and v - v == 0:
                        right, dr = v, k
                        break
                if dl > 0 and dr > 0:
                    value = np.float32((left * dr + right * dl) / (dl + dr))
                elif dl > 0:
                    value = left
                elif dr > 0:
                    value = right
            else:
                n = 0
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        if dy == 0 and dx == 0:
                            continue
                        i, j = r + dy * step, c + dx * step
                        if 0 <= i < rows and 0 <= j < cols and not bad[i, j]:
                            v = src[i, j]
                            if v - v == 0:
                                nb[n] = v
                                n += 1
                if n > 0:
                    value = np.float32(np.median(nb[:n]))
            out[r, c] = value
            if value - value == 0:
                filled += 1
    return filled
