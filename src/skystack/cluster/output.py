"""Writing one tile into the shared, preallocated output file from a worker process.

The client creates the product with :class:`skystack.io.writer.FitsTileWriter` under a fixed
partial name: headers written, data areas sized with ``ftruncate``. A worker needs only the
path and where each plane's data area starts (:meth:`FitsTileWriter.plane_layout`): it opens
the file by path, writes its tile's rows of every plane big-endian with ``pwrite`` at their
offsets — exactly the bytes ``FitsTileWriter.write_tile`` would write — and ``fdatasync``\\ s
before reporting the tile done. Tiles never overlap, so workers on several machines write one
file concurrently; writing a tile twice writes the same bytes (a recomputed tile is harmless).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import numpy as np

from ..core.tiles import Tile
from ..io.writer import plane_chunks, pwrite_all

__all__ = ["OutputSpec", "BandWriter"]


@dataclass(frozen=True)
class OutputSpec:
    """The partial file and its layout: image shape (rows, cols), and per plane in HDU order
    (image, UNCERT, MASK, COUNT, extras…) the data offset and big-endian dtype string."""

    partial: str
    shape: tuple[int, int]
    planes: tuple[tuple[int, str], ...]
    extra_names: tuple[str, ...] = ()


class BandWriter:
    """A sink (``write_tile`` as :class:`FitsTileWriter`'s) for one task's tile; :meth:`finish`
    syncs and closes the file and returns the CRC-32 of everything written."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self.crc = 0
        self.nbytes = 0
        self._fd = os.open(spec.partial, os.O_WRONLY)

    def write_tile(self, tile: Tile, image: np.ndarray, uncertainty: np.ndarray,
                   count: np.ndarray, *, mask: np.ndarray | None = None,
                   extras: dict[str, np.ndarray] | None = None) -> None:
        """Write one tile's planes at their offsets (``mask`` defaults to ``count == 0``)."""
        mask = (count == 0) if mask is None else mask
        planes = [image, uncertainty, mask.astype(np.uint8), count]
        planes += [(extras or {})[name] for name in self.spec.extra_names]
        for view, offset in plane_chunks(tile, self.spec.shape[1], self.spec.planes, planes):
            pwrite_all(self._fd, view, offset)
            self.crc = zlib.crc32(view, self.crc)
            self.nbytes += len(view)

    def finish(self) -> int:
        """Make the tile durable (the client journals it next), close, return the CRC-32."""
        try:
            os.fdatasync(self._fd)
        finally:
            os.close(self._fd)
        return self.crc
