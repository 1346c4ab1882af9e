"""Pixel sources for images stored in other formats than FITS (TIFF, XISF).

* :class:`PlaneSource`: an uncompressed 2-D plane at a byte offset of a file, in any NumPy
  dtype and byte order (an uncompressed TIFF strip/tile-less image, an attached XISF block):
  each tile is read with ``os.pread`` through the :class:`~skystack.io.reader.HandlePool`, as
  :class:`~skystack.io.reader.RawFitsSource` reads FITS, so a tile costs its own bytes only.
* :class:`DecodedSource`: a compressed image, decoded whole by its format's library the first
  time a tile is asked for and then kept in memory for the frame's lifetime (one frame's
  pixels as float32 per compressed input: compressed TIFF/XISF inputs do not stream).

Both are :class:`~skystack.io.contracts.PixelSource` s; their :meth:`to_spec` are small
picklable specs (path, offset, dtype; or path and format) so that they run on a cluster too.
Pixel values are used as stored (integers not rescaled to [0, 1] as PixInsight displays them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..core.tiles import Tile
from ..errors import SkystackError
from .reader import NATIVE_F32, HandlePool, StageSpec

__all__ = ["PlaneSource", "PlaneSpec", "DecodedSource", "DecodedSpec"]

_NATIVE_F32 = StageSpec(NATIVE_F32, 4)  # float32 decoded on the host


def stage_decoded(source, tile: Tile, dest: np.ndarray) -> None:
    """Stage host-decoded float32 pixels into the uint8 staging buffer ``dest``."""
    source.read(tile, dest[: tile.shape[0] * tile.shape[1] * 4].view(np.float32)
                .reshape(tile.shape))


class PlaneSource:
    """A 2-D image of ``shape`` (rows, cols), row-major, of ``dtype`` (with its byte order)
    starting at byte ``offset`` of ``path``."""

    def __init__(self, path: str, offset: int, shape: tuple[int, int], dtype: np.dtype,
                 pool: HandlePool | None = None) -> None:
        self.path = path
        self.offset = int(offset)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.pool = pool or HandlePool()

    def read(self, tile: Tile, out: np.ndarray) -> None:
        """Write the tile's pixels as float32 into ``out`` (``tile.shape``)."""
        rows, cols = tile.shape
        item = self.dtype.itemsize
        width = self.shape[1]
        raw = np.empty(rows * cols * item, np.uint8)
        view = memoryview(raw)
        if cols == width:
            spans = [(self.offset + tile.r0 * width * item, view)]
        else:
            row_bytes = cols * item
            spans = [(self.offset + ((tile.r0 + i) * width + tile.c0) * item,
                      view[i * row_bytes:(i + 1) * row_bytes]) for i in range(rows)]
        for offset, part in spans:
            if self.pool.pread_into(self.path, part, offset) != len(part):
                raise SkystackError(f"{self.path}: truncated data (file ends inside the image)")
        np.copyto(out, raw.view(self.dtype).reshape(rows, cols), casting="unsafe")

    def stage_spec(self) -> StageSpec:
        """Decoded on the host (the GPU's decoder knows FITS storage only)."""
        return _NATIVE_F32

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        stage_decoded(self, tile, dest)

    def to_spec(self, label: str) -> PlaneSpec:
        """The picklable description that reopens this source elsewhere."""
        return PlaneSpec(os.path.abspath(self.path), self.offset, self.shape, self.dtype.str)


@dataclass(frozen=True)
class PlaneSpec:
    """A :class:`PlaneSource` described for another process (``dtype``: NumPy's ``str``)."""

    path: str
    offset: int
    shape: tuple[int, int]
    dtype: str

    def open(self, pool: HandlePool) -> PlaneSource:
        return PlaneSource(self.path, self.offset, self.shape, np.dtype(self.dtype), pool=pool)

    def files(self) -> list[str]:
        return [self.path]


class DecodedSource:
    """A compressed image decoded whole once by ``decoder(path)`` (a module-level function, so
    that the spec pickles; module docstring); ``fmt`` names the format in messages."""

    def __init__(self, path: str, fmt: str, shape: tuple[int, int],
                 decoder: Callable[[str], np.ndarray]) -> None:
        self.path = path
        self.fmt = fmt
        self.decoder = decoder
        self.shape = (int(shape[0]), int(shape[1]))
        self._data: np.ndarray | None = None
        self._lock = threading.Lock()

    def _pixels(self) -> np.ndarray:
        with self._lock:
            if self._data is None:
                try:
                    data = np.asarray(self.decoder(self.path))
                except SkystackError:
                    raise
                except Exception as exc:  # the codecs raise many kinds
                    raise SkystackError(f"{self.path}: cannot decode {self.fmt} image data "
                                        f"({' '.join(str(exc).split()) or type(exc).__name__})"
                                        ) from None
                if data.shape != self.shape:
                    raise SkystackError(f"{self.path}: decoded image is {data.shape}, its "
                                        f"header said {self.shape}")
                self._data = data.astype(np.float32)
            return self._data

    def read(self, tile: Tile, out: np.ndarray) -> None:
        out[...] = self._pixels()[tile.r0:tile.r1, tile.c0:tile.c1]

    def stage_spec(self) -> StageSpec:
        return _NATIVE_F32

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        stage_decoded(self, tile, dest)

    def to_spec(self, label: str) -> DecodedSpec:
        return DecodedSpec(os.path.abspath(self.path), self.fmt, self.shape, self.decoder)


@dataclass(frozen=True)
class DecodedSpec:
    """A :class:`DecodedSource` described for another process."""

    path: str
    fmt: str
    shape: tuple[int, int]
    decoder: Callable[[str], np.ndarray]

    def open(self, pool: HandlePool) -> DecodedSource:
        return DecodedSource(self.path, self.fmt, self.shape, self.decoder)

    def files(self) -> list[str]:
        return [self.path]
