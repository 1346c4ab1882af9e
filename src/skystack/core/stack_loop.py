"""The host stack loop: every output tile is filled by resampling each frame straight into it,
then combined — no resampled copy of any frame is ever written.

Per output tile (a band of rows of the output grid) and per frame, on a pool of threads:

1. the frame's pixel map for the band (:func:`skystack.regrid.pixmap.pixel_map`: astropy on a
   coarse grid, interpolated in float64);
2. the input rows those coordinates need (plus the method's margin,
   :func:`skystack.regrid.interp.reach`, so that resampling the rows alone gives exactly what
   resampling the whole frame would) are read with the frame's source;
3. bilinear (or nearest, or clamped Lanczos-3/-4) resampling following
   ``reproject.reproject_interp``'s rules into the frame's plane of the tile block; frames
   whose footprint misses the band are skipped (NaN).

The block then goes to the backend's ``combine_tile`` like any other tile. COUNT is the coverage
(frames whose resampled value is finite at the pixel, before rejection), EXPMAP the sum of their
EXPTIME. The pieces (:class:`FrameResampler`, :func:`fill_stack_block`,
:func:`coverage_and_expmap`, :func:`write_stack_tile`, :func:`stack_tile_plan`) are shared with
the cluster's tile tasks and the GPU's streaming stack, so every path follows the same rules.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from astropy.wcs import WCS
from numba import njit

from ..config import CombineOptions
from ..regrid.interp import BAND_METHODS, pixel_area_ratio, reach, row_span
from ..regrid.pixmap import pixel_map
from .frame import Frame
from .grid import Grid
from .records import FrameParams, RunStats, TileOutputs
from .tiles import Tile, plan_tiles

__all__ = ["FrameResampler", "grid_rows_of", "misses_tile", "write_stack_tile",
           "stack_tile_plan", "fill_stack_block", "coverage_and_expmap", "host_stack"]


def grid_rows_of(wcs: WCS, shape: tuple[int, int], grid: Grid) -> tuple[float, float] | None:
    """Rows of the grid the frame's edges project to (min, max), or None if nowhere finite."""
    rows, cols = shape
    t = np.linspace(-0.5, 1.0, 65)
    xs = np.concatenate([t * cols - 0.5 * (t < 0), np.full(65, cols - 0.5), t * cols,
                         np.full(65, -0.5)])
    ys = np.concatenate([np.full(65, -0.5), t * rows, np.full(65, rows - 0.5), t * rows])
    xs = np.clip(xs, -0.5, cols - 0.5)
    ys = np.clip(ys, -0.5, rows - 0.5)
    with np.errstate(all="ignore"):
        world = wcs.pixel_to_world_values(xs, ys)
        _, gy = grid.wcs.world_to_pixel_values(*world)
    gy = gy[np.isfinite(gy)]
    if gy.size == 0:
        return None
    return float(gy.min()), float(gy.max())


def misses_tile(rows: tuple[float, float] | None, tile: Tile) -> bool:
    """Whether a frame whose edges project to grid rows ``rows`` (:func:`grid_rows_of`) misses
    ``tile`` (a margin of two rows guards against the edges' sampling)."""
    return rows is None or rows[1] < tile.r0 - 2 or rows[0] > tile.r1 + 1


class FrameResampler:
    """Resamples one frame into bands of the output grid."""

    def __init__(self, frame: Frame, wcs: WCS, grid: Grid, interp: str, conserve_flux: bool,
                 step: int) -> None:
        self.frame = frame
        self.wcs = wcs
        self.grid = grid
        self.interp = interp
        self.conserve_flux = conserve_flux
        self.step = step
        self.rows = grid_rows_of(wcs, frame.shape, grid)

    def fill(self, tile: Tile, out: np.ndarray) -> None:
        """Write the frame resampled onto ``tile`` into ``out`` (NaN outside its footprint)."""
        if misses_tile(self.rows, tile):
            out[...] = np.nan
            return
        x, y = pixel_map(self.wcs, self.grid.wcs, self.grid.shape,
                         rows=slice(tile.r0, tile.r1), step=self.step)
        x = x[:, tile.c0:tile.c1]
        y = y[:, tile.c0:tile.c1]
        height = self.frame.shape[0]
        ylo, yhi = row_span(x, y, height)
        if ylo > yhi:  # no position inside the frame's rows
            out[...] = np.nan
            return
        margin = reach(self.interp)  # 1 row for bilinear/nearest, a for Lanczos-a
        r_lo = max(0, int(math.floor(ylo)) - margin)
        r_hi = min(height, int(math.floor(yhi)) + margin + 2)
        region = np.empty((r_hi - r_lo, self.frame.shape[1]), np.float32)
        self.frame.source.read(Tile(r_lo, r_hi, 0, self.frame.shape[1]), region)
        # Rows outside [r_lo, r_hi) are never in a window of an in-range coordinate; the band
        # kernels apply the whole frame's edge rules (see module doc).
        BAND_METHODS[self.interp](region, r_lo, height, x, y, out)
        if self.conserve_flux:
            out *= pixel_area_ratio(x, y).astype(np.float32)


def write_stack_tile(sinks, tile: Tile, out: TileOutputs, coverage: np.ndarray,
                     expmap: np.ndarray) -> None:
    """Hand one finished tile of a stack to every sink: image, uncertainty, COUNT = coverage,
    MASK = no value kept, EXPMAP (float32); sinks with ``takes_kept`` (the uncertainty's,
    :func:`skystack.uncertainty.uncertainty_sinks`) also get the count of kept values."""
    for sink in sinks:
        more = {"kept": out.count} if getattr(sink, "takes_kept", False) else {}
        sink.write_tile(tile, out.image, out.uncertainty, coverage, mask=out.count == 0,
                        extras={"EXPMAP": expmap.astype(np.float32, copy=False)}, **more)


def stack_tile_plan(frames: list[Frame], shape: tuple[int, int], options: CombineOptions,
                    workers: int, max_tile_rows: int | None) -> list[Tile]:
    """The output tiles of a CPU stack of ``frames`` onto a grid of ``shape``, with ``workers``
    resampling threads (the cluster driver plans with this too, so its tiles are the same)."""
    # A frame-sized read region and a pixel map per worker come on top of the tile loop.
    biggest_frame = max(f.shape[0] * f.shape[1] for f in frames) * 4
    budget = max(options.mem_limit - workers * biggest_frame, options.mem_limit // 4)
    return plan_tiles(shape, len(frames), budget, max_rows=max_tile_rows)


def fill_stack_block(pool: ThreadPoolExecutor, resamplers: list[FrameResampler], tile: Tile,
                     block: np.ndarray) -> None:
    """Resample every frame onto ``tile`` into ``block[k]`` (n_frames, rows, cols), on ``pool``."""
    for f in [pool.submit(r.fill, tile, block[k]) for k, r in enumerate(resamplers)]:
        f.result()


def coverage_and_expmap(block: np.ndarray, exptimes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COUNT (int32: frames with a finite resampled value per pixel) and EXPMAP (float32: the sum
    of those frames' EXPTIME, seconds) of a resampled block, before rejection."""
    coverage = np.empty(block.shape[1:], np.int32)
    expmap = np.empty(block.shape[1:], np.float32)
    _coverage_expmap(block.reshape(block.shape[0], -1), np.asarray(exptimes, np.float32),
                     coverage.reshape(-1), expmap.reshape(-1))
    return coverage, expmap


@njit(nogil=True, cache=True)
def _coverage_expmap(block, exptimes, coverage, expmap):  # pragma: no cover - compiled
    # One pass over the block instead of isfinite + sum + a masked add per frame; EXPMAP sums
    # in float32 in frame order, as the NumPy version did.
    n, npix = block.shape
    for p in range(npix):
        coverage[p] = 0
        expmap[p] = 0.0
    for k in range(n):
        t = exptimes[k]
        row = block[k]
        for p in range(npix):
            v = row[p]
            ok = v - v == 0  # finite
            coverage[p] += np.int32(ok)
            expmap[p] += t if ok else np.float32(0.0)


def host_stack(backend, frames: list[Frame], grid: Grid, options: CombineOptions,
               params: FrameParams, sinks, *, wcs_list: list[WCS], exptimes: np.ndarray,
               interp: str = "bilinear", conserve_flux: bool = False, progress=None,
               max_tile_rows: int | None = None, workers: int = 2,
               step: int = 32) -> RunStats:
    """Reproject ``frames`` onto ``grid`` and combine them tile by tile with
    ``backend.combine_tile`` into ``sinks`` (see module docstring and
    :func:`write_stack_tile`); ``exptimes`` float32 seconds per frame (0 where unknown).
    ``seconds`` of the result count from the call."""
    t0 = time.perf_counter()
    n = len(frames)
    tiles = stack_tile_plan(frames, grid.shape, options, workers, max_tile_rows)
    resamplers = [FrameResampler(f, w, grid, interp, conserve_flux, step)
                  for f, w in zip(frames, wcs_list)]
    biggest = max(t.shape[0] * t.shape[1] for t in tiles)
    flat = np.empty(n * biggest, np.float32)
    combine_time = 0.0
    read_time = 0.0
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="skystack-resample") as pool:
        for i, tile in enumerate(tiles):
            block = flat[: n * tile.shape[0] * tile.shape[1]].reshape(n, *tile.shape)
            tr = time.perf_counter()
            fill_stack_block(pool, resamplers, tile, block)
            read_time += time.perf_counter() - tr
            coverage, expmap = coverage_and_expmap(block, exptimes)
            out = TileOutputs.empty(tile.shape)
            tc = time.perf_counter()
            backend.combine_tile(block, options, params, out)
            combine_time += time.perf_counter() - tc
            write_stack_tile(sinks, tile, out, coverage, expmap)
            if progress is not None:
                progress(i + 1, len(tiles))
    return RunStats(n, len(tiles), tiles[0].shape, time.perf_counter() - t0, read_time,
                    combine_time)
