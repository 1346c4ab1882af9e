"""The Backend protocol: what a run asks of a compute engine.

A backend runs the two loops of a product — :meth:`Backend.run_combine` (pixel by pixel along
the frame axis) and :meth:`Backend.run_stack` (each frame resampled onto an output grid, then
combined) — handing every finished tile to the sinks
(:class:`skystack.io.contracts.TileSink`). The front ends (:func:`skystack.pipeline.combine_frames`,
:func:`skystack.stacking.stack_frames`) prepare a run the same way for every engine and call
these; nothing tests what kind of engine it is.

* The CPU runs the host loops of :mod:`skystack.core` (:class:`HostLoops`), which hand
  :meth:`Backend.combine_tile` one float32 block of shape ``(n_frames, rows, cols)``
  (frame-major, C order; NaN = missing) and per-frame parameters; it writes the combined image,
  its standard error and the count of values used into preallocated outputs of shape
  ``(rows, cols)``.
* The GPU streams raw bytes through pinned memory with its own tiling and buffers
  (:class:`skystack.backends.gpu.backend.StreamingBackend`); its ``combine_tile`` serves
  single in-memory blocks (the cluster's tile tasks).

``thread_safe`` says whether ``combine_tile`` may run in several threads at once (the cluster's
worker threads serialise it otherwise). Backends never open files themselves: pixels come from
the frames' sources.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from astropy.wcs import WCS

from ..config import CombineOptions
from ..core.combine_loop import Progress, host_combine
from ..core.frame import Frame
from ..core.grid import Grid
from ..core.records import FrameParams, RunStats, TileOutputs
from ..core.stack_loop import host_stack

__all__ = ["Backend", "FrameParams", "TileOutputs", "RunStats", "HostLoops"]


@runtime_checkable
class Backend(Protocol):
    """A compute engine for the combination and reprojection of tiles (module docstring)."""

    name: str
    thread_safe: bool

    def describe(self) -> str:
        """One line naming the engine and its hardware, for logs and FITS provenance."""

    def combine_tile(self, block: np.ndarray, options: CombineOptions, params: FrameParams,
                     out: TileOutputs) -> None:
        """Combine ``block`` (n_frames, rows, cols) along axis 0 into ``out``."""

    def run_combine(self, frames: list[Frame], options: CombineOptions, params: FrameParams,
                    sinks, *, progress: Progress | None = None,
                    max_tile_rows: int | None = None, read_workers: int = 2) -> RunStats:
        """Combine ``frames`` (same shape) tile by tile into ``sinks``: each gets
        ``write_tile(tile, image, uncertainty, count)``. ``options`` are validated and their
        uncertainty resolved, ``sinks`` already wrapped for it
        (:func:`skystack.uncertainty.uncertainty_sinks`); ``max_tile_rows`` caps a tile's rows,
        ``read_workers`` the reading threads (a floor: an engine may use more)."""

    def run_stack(self, frames: list[Frame], grid: Grid, options: CombineOptions,
                  params: FrameParams, sinks, *, wcs_list: list[WCS], exptimes: np.ndarray,
                  interp: str = "bilinear", conserve_flux: bool = False,
                  progress: Progress | None = None, max_tile_rows: int | None = None,
                  workers: int = 2, step: int = 32) -> RunStats:
        """Reproject ``frames`` (celestial WCS ``wcs_list``) onto ``grid`` and combine them
        tile by tile into ``sinks`` (:func:`skystack.core.stack_loop.write_stack_tile`: COUNT
        is the coverage, MASK no value kept, EXPMAP the sum of ``exptimes``, float32 seconds);
        ``interp``, ``conserve_flux`` and the pixel-map ``step`` as in
        :mod:`skystack.core.stack_loop`, ``workers`` resampling threads."""

    def close(self) -> None:
        """Release threads, streams and device memory."""


class HostLoops:
    """``run_combine`` and ``run_stack`` as the host loops of :mod:`skystack.core`, calling
    the engine's own ``combine_tile`` on each tile (the CPU backend)."""

    def run_combine(self, frames: list[Frame], options: CombineOptions, params: FrameParams,
                    sinks, *, progress: Progress | None = None,
                    max_tile_rows: int | None = None, read_workers: int = 2) -> RunStats:
        """See :meth:`Backend.run_combine` (:func:`skystack.core.combine_loop.host_combine`)."""
        return host_combine(self, frames, options, params, sinks, progress=progress,
                            max_tile_rows=max_tile_rows, read_workers=read_workers)

    def run_stack(self, frames: list[Frame], grid: Grid, options: CombineOptions,
                  params: FrameParams, sinks, *, wcs_list: list[WCS], exptimes: np.ndarray,
                  interp: str = "bilinear", conserve_flux: bool = False,
                  progress: Progress | None = None, max_tile_rows: int | None = None,
                  workers: int = 2, step: int = 32) -> RunStats:
        """See :meth:`Backend.run_stack` (:func:`skystack.core.stack_loop.host_stack`)."""
        return host_stack(self, frames, grid, options, params, sinks, wcs_list=wcs_list,
                          exptimes=exptimes, interp=interp, conserve_flux=conserve_flux,
                          progress=progress, max_tile_rows=max_tile_rows, workers=workers,
                          step=step)
