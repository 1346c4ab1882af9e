"""Pixel samples of a frame for per-frame statistics: evenly spaced bands of rows, read in a few
dozen reads per frame (about a million pixels by default), so that estimating a frame's level,
noise or scale costs a small fraction of reading a large stack."""

from __future__ import annotations

import math

import numpy as np

from .core.frame import Frame
from .core.tiles import Tile

SAMPLE_PIXELS = 1_000_000


SAMPLE_BANDS = 32


def sample_rows(shape: tuple[int, int], target: int = SAMPLE_PIXELS) -> np.ndarray:
    """Row indices giving about ``target`` pixels (all rows if fewer): ``SAMPLE_BANDS`` evenly
    spaced bands of consecutive rows, so that a sample costs a few dozen reads, not one per row.
    """
    rows, cols = shape
    n = min(rows, max(1, math.ceil(target / cols)))
    if n >= rows:
        return np.arange(rows)
    bands = min(SAMPLE_BANDS, n)
    per_band = math.ceil(n / bands)
    starts = np.linspace(0, rows - per_band, bands).round().astype(int)
    return np.unique((starts[:, None] + np.arange(per_band)[None, :]).ravel())


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """(first row, end row, position in ``rows``) of each run of consecutive sorted rows."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(rows)]))
    return [(int(rows[a]), int(rows[b - 1]) + 1, int(a)) for a, b in zip(starts, ends)]


def read_rows(frame: Frame, rows: np.ndarray) -> np.ndarray:
    """The given (sorted, unique) rows of a frame, float32 ``(len(rows), cols)``, NaN = no data
    (pixel positions kept, so that two frames' samples compare pixel by pixel)."""
    out = np.empty((len(rows), frame.shape[1]), np.float32)
    for r0, r1, pos in _runs(np.asarray(rows)):
        frame.source.read(Tile(r0, r1, 0, frame.shape[1]), out[pos:pos + r1 - r0])
    return out


def frame_sample(frame: Frame, rows: np.ndarray) -> np.ndarray:
    """The finite pixels of the given (sorted, unique) rows of a frame, as a float32 1-D array."""
    values = read_rows(frame, rows).ravel()
    return values[np.isfinite(values)]
