"""The contracts between the loops and the data: where pixels come from, where tiles go.

* :class:`TileSource`: anything that reads a rectangle of an image as float32 (NaN = no data):
  the frames' sources, and the sigma sources of ``--uncertainty propagate``
  (:mod:`skystack.io.sigma`).
* :class:`PixelSource`: a frame's source (:attr:`skystack.core.frame.Frame.source`). Besides
  reading, it says how the GPU receives its pixels (``stage_spec``/``read_staged``: raw bytes
  decoded on the device, or float32 decoded on the host) and describes itself for another
  process (``to_spec``: a picklable :class:`SourceSpec`, or a one-line error for in-memory
  data). Implementations: :class:`~skystack.io.reader.RawFitsSource`,
  :class:`~skystack.io.reader.CompressedFitsSource`, :class:`~skystack.io.reader.ArraySource`,
  :class:`~skystack.io.plane_source.PlaneSource` / :class:`~skystack.io.plane_source.DecodedSource`
  (TIFF, XISF), :class:`~skystack.night.calibrate.CalibratedSource` and
  :class:`~skystack.night.calibrate.InMemoryMaster`.
* :class:`SourceSpec`: rebuilds its source on a worker (``open``) and names the files it reads
  (``files``; the cluster's fingerprint of a run).
* :class:`TileSink`: receives every finished tile of a product, in any order, each once:
  :class:`~skystack.io.writer.FitsTileWriter` (the product file),
  :class:`~skystack.pipeline.ArraySink` (in memory), the cluster's
  :class:`~skystack.cluster.output.BandWriter` (one tile into the shared partial file) and the
  uncertainty's wrapper (:func:`skystack.uncertainty.uncertainty_sinks`).

Conventions: a tile is a :class:`~skystack.core.tiles.Tile` (rows ``[r0, r1)``, columns
``[c0, c1)``); ``out`` arrays are C-contiguous float32 of ``tile.shape``; sources are safe to
read from several threads at once.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..core.tiles import Tile
from .reader import HandlePool, StageSpec

__all__ = ["TileSource", "PixelSource", "SourceSpec", "TileSink"]


@runtime_checkable
class TileSource(Protocol):
    """Reads rectangles of an image of ``shape`` (rows, cols)."""

    shape: tuple[int, int]

    def read(self, tile: Tile, out: np.ndarray) -> None:
        """Write the tile's pixels as float32 into ``out`` (``tile.shape``; NaN = no data)."""


@runtime_checkable
class PixelSource(TileSource, Protocol):
    """A frame's pixel source (module docstring)."""

    def stage_spec(self) -> StageSpec:
        """How :meth:`read_staged` lays out the tile for the GPU's decoder."""

    def read_staged(self, tile: Tile, dest: np.ndarray) -> None:
        """Put the tile into ``dest`` (uint8) in the form :meth:`stage_spec` describes."""

    def to_spec(self, label: str) -> SourceSpec:
        """A picklable description that rebuilds this source in another process; a one-line
        :class:`~skystack.errors.SkystackError` naming ``label`` when it cannot be (pixels held
        only in this process's memory)."""


@runtime_checkable
class SourceSpec(Protocol):
    """A picklable description of a :class:`PixelSource` (paths, offsets, scaling)."""

    def open(self, pool: HandlePool) -> PixelSource:
        """The source, its open files kept in ``pool``."""

    def files(self) -> list[str]:
        """Every file the source reads."""


@runtime_checkable
class TileSink(Protocol):
    """Receives the finished tiles of a product (module docstring)."""

    def write_tile(self, tile: Tile, image: np.ndarray, uncertainty: np.ndarray,
                   count: np.ndarray, *, mask: np.ndarray | None = None,
                   extras: dict[str, np.ndarray] | None = None) -> None:
        """Take one tile: ``image`` and ``uncertainty`` float32, ``count`` int32 (a combine's
        values used; a stack's coverage), ``mask`` True where no value was kept (default
        ``count == 0``), ``extras`` further planes by name (a stack's ``EXPMAP``)."""
