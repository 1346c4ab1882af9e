"""Reprojected stacking: every output tile is filled by resampling each frame straight into it,
then combined — no resampled copy of any frame is ever written.

Per output tile (a band of rows of the output grid) and per frame, on a pool of threads:

1. the frame's pixel map for the band (:func:`skystack.regrid.pixmap.pixel_map`: astropy on a
   coarse grid, interpolated in float64);
2. the input rows those coordinates need (plus a one-row margin, so that resampling the rows
   alone gives exactly what resampling the whole frame would) are read with the frame's source;
3. bilinear (or nearest) resampling following ``reproject.reproject_interp``'s rules into the
   frame's plane of the tile block; frames whose footprint misses the band are skipped (NaN).

The block then goes to the backend's combine like any other tile. COUNT is the coverage (frames
whose resampled value is finite at the pixel, before rejection), EXPMAP the sum of their EXPTIME.

A backend with ``stream_stack`` (the GPU) takes the whole run instead: it follows the same rules
on the device, where the resampled block is combined without leaving it.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from numba import njit

from .backends.base import Backend, TileOutputs
from .config import CombineOptions
from .io.inputs import Frame
from .io.provenance import exposure_seconds, wcs_cards
from .io.reader import Tile
from .io.sigma import ResampledSigma, sigma_source
from .normalization import frame_params
from .pipeline import RunStats
from .regrid.header_wcs import parse_header_wcs
from .regrid.interp import BAND_METHODS, pixel_area_ratio, row_span
from .regrid.pixmap import check_celestial, pixel_map
from .tiling import plan_tiles
from .uncertainty import resolve_uncertainty, uncertainty_sinks

log = logging.getLogger("skystack")


# Cards of a celestial WCS header that mean nothing for the pixel-only WCS of a product.
_CELESTIAL_ONLY = ("LATPOLE", "LONPOLE", "RADESYS", "EQUINOX", "MJDREF", "DATEREF")


@dataclass(frozen=True)
class Grid:
    """The output pixel grid: its celestial WCS (what the frames are resampled onto) and shape
    (rows, cols).

    ``product_wcs``, when given, is the WCS the product gets instead of ``wcs``: the
    pixel-only WCS of frames aligned by their stars on a reference without sky coordinates
    (:func:`skystack.register.wcs.pixel_wcs`), whose ``wcs`` is synthetic and must not reach
    the output."""

    wcs: WCS
    shape: tuple[int, int]
    product_wcs: WCS | None = None

    @property
    def output_wcs(self) -> WCS:
        """The WCS of the product (``product_wcs`` or ``wcs``)."""
        return self.product_wcs if self.product_wcs is not None else self.wcs

    def header(self):
        """The product's WCS cards (:attr:`output_wcs`; SIP included), without the time
        keywords a WCS may carry (:func:`skystack.io.provenance.wcs_cards`: a product's times
        are its combined frames')."""
        header = wcs_cards(self.output_wcs)
        if self.product_wcs is not None:
            for key in _CELESTIAL_ONLY:
                header.remove(key, ignore_missing=True)
        return header


def frame_wcs(frame: Frame) -> WCS:
    """The celestial WCS of a frame's header (SIP included); one-line error naming the frame
    when there is none or it is unusable (a WCS keyword that is not a number, a singular
    pixel scale matrix: :func:`~skystack.regrid.header_wcs.parse_header_wcs`,
    :func:`~skystack.regrid.pixmap.check_celestial`)."""
    return check_celestial(parse_header_wcs(frame.header, frame.label), frame.label)


def frames_off_grid(wcs_list: list[WCS], shapes: list[tuple[int, int]], grid: Grid) -> list[int]:
    """Indices of the frames whose footprint does not overlap ``grid`` at all
    (:func:`skystack.regrid.grid.overlaps_grid`): they could give no pixel to a stack on it,
    and must be neither resampled nor counted in its provenance (NCOMBINE, IMCMB, EXPTIME)."""
    from .regrid.grid import overlaps_grid

    return [k for k, (w, s) in enumerate(zip(wcs_list, shapes))
            if not overlaps_grid(w, s, grid.wcs, grid.shape)]


def _bbox_in_grid(wcs: WCS, shape: tuple[int, int], grid: Grid) -> tuple[float, float] | None:
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


def _misses(rows: tuple[float, float] | None, tile: Tile) -> bool:
    """Whether a frame whose edges project to grid rows ``rows`` (:func:`_bbox_in_grid`) misses
    ``tile`` (a margin of two rows guards against the edges' sampling)."""
    return rows is None or rows[1] < tile.r0 - 2 or rows[0] > tile.r1 + 1


class _FrameResampler:
    """Resamples one frame into bands of the output grid."""

    def __init__(self, frame: Frame, wcs: WCS, grid: Grid, interp: str, conserve_flux: bool,
                 step: int) -> None:
        self.frame = frame
        self.wcs = wcs
        self.grid = grid
        self.interp = interp
        self.conserve_flux = conserve_flux
        self.step = step
        self.rows = _bbox_in_grid(wcs, frame.shape, grid)

    def fill(self, tile: Tile, out: np.ndarray) -> None:
        """Write the frame resampled onto ``tile`` into ``out`` (NaN outside its footprint)."""
        if _misses(self.rows, tile):
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
        r_lo = max(0, int(math.floor(ylo)) - 1)
        r_hi = min(height, int(math.floor(yhi)) + 3)
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


def fill_stack_block(pool: ThreadPoolExecutor, resamplers: list[_FrameResampler], tile: Tile,
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


def stack_frames(frames: list[Frame], grid: Grid, options: CombineOptions, backend: Backend,
                 sinks, *, interp: str = "bilinear", conserve_flux: bool = False,
                 progress=None, max_tile_rows: int | None = None, workers: int = 2,
                 step: int = 32, wcs_list: list[WCS] | None = None) -> RunStats:
    """Reproject ``frames`` onto ``grid`` and combine them tile by tile into ``sinks``.

    Each sink gets ``write_tile(tile, image, uncertainty, coverage, mask=..., extras={"EXPMAP":
    ...})``; ``mask`` is True where no value survived rejection.
    """
    t0 = time.perf_counter()
    n = len(frames)
    if wcs_list is None:
        wcs_list = [frame_wcs(f) for f in frames]
    options = resolve_uncertainty(frames, options)
    params = frame_params(frames, options)
    sigma = None
    if options.uncertainty == "propagate":
        sigma = ResampledSigma(frames, [sigma_source(f) for f in frames], wcs_list, grid,
                               interp, conserve_flux, step)
    sinks = uncertainty_sinks(sinks, options, params, sigma)  # UNCERT: skystack.uncertainty
    exptimes = np.nan_to_num(np.array([exposure_seconds(f.header) for f in frames], np.float32))
    if hasattr(backend, "stream_stack"):
        # The GPU resamples on the device into the tile block it combines, with its own tiling
        # and buffers (skystack.backends.gpu.stack_streaming); same rules and results.
        return backend.stream_stack(frames, grid, options, params, sinks, wcs_list=wcs_list,
                                    exptimes=exptimes, interp=interp,
                                    conserve_flux=conserve_flux, progress=progress,
                                    max_tile_rows=max_tile_rows, workers=workers, step=step)
    tiles = stack_tile_plan(frames, grid.shape, options, workers, max_tile_rows)
    resamplers = [_FrameResampler(f, w, grid, interp, conserve_flux, step)
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
