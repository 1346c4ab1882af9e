"""Pure geometry: the tiles of an image, sized from a memory budget. No I/O.

A tile is a band of full rows when even one row of every frame fits the budget, otherwise a band
of rows split into column ranges. The budget covers what the tile loop holds at once: two input
blocks (one being read while the other is combined) and the outputs of one tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Tile", "OUTPUT_BYTES_PER_PIXEL", "INPUT_BUFFERS", "bytes_per_pixel", "plan_tiles"]


@dataclass(frozen=True)
class Tile:
    """A rectangle of the image: rows ``[r0, r1)``, columns ``[c0, c1)`` (0-based, numpy order)."""

    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.r1 - self.r0, self.c1 - self.c0)


# float32 image + float32 uncertainty + int32 count + uint8 mask, and their big-endian copies.
OUTPUT_BYTES_PER_PIXEL = 2 * (4 + 4 + 4 + 1)
INPUT_BUFFERS = 2


def bytes_per_pixel(n_frames: int) -> int:
    """Bytes the tile loop holds per output pixel of a tile."""
    return INPUT_BUFFERS * 4 * n_frames + OUTPUT_BYTES_PER_PIXEL


def plan_tiles(shape: tuple[int, int], n_frames: int, mem_limit: int,
               max_rows: int | None = None, min_tiles: int = 8) -> list[Tile]:
    """Tiles covering ``shape`` (rows, cols) in row-major order.

    Parameters
    ----------
    shape
        Image shape (rows, cols).
    n_frames
        Frames combined per pixel.
    mem_limit
        Bytes available for the tile loop's buffers (see module docstring).
    max_rows
        Upper bound on rows per tile (tests use tiny tiles to force the multi-tile paths).
    min_tiles
        Aim for at least this many row bands, so that reading the next tile overlaps the
        combination of this one; never below 1 row per band.
    """
    rows, cols = shape
    per_pixel = bytes_per_pixel(n_frames)
    fit_pixels = max(1, mem_limit // per_pixel)
    if fit_pixels >= cols:
        band = max(1, min(rows, fit_pixels // cols, math.ceil(rows / min_tiles)))
        if max_rows is not None:
            band = max(1, min(band, max_rows))
        return [Tile(r, min(rows, r + band), 0, cols) for r in range(0, rows, band)]
    width = max(1, fit_pixels)
    return [Tile(r, r + 1, c, min(cols, c + width))
            for r in range(rows) for c in range(0, cols, width)]
