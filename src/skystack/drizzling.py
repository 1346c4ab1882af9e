"""Drizzle co-adds: ``skystack stack --interp drizzle`` (variable-pixel linear reconstruction).

Instead of interpolating each frame at the output pixel centres, every input pixel is shrunk by
``pixfrac`` (its side times pixfrac, about its centre) and its value is poured onto the output
pixels that "drop" overlaps, weighted by the overlap area and the frame's weight (Fruchter &
Hook 2002). The algorithm is the ``drizzle`` package's (:class:`drizzle.resample.Drizzle`, its
C kernel ``tdriz``), rewritten as Numba kernels in :mod:`skystack.regrid.drizzle_kernel` that
agree with it to float32 rounding (``tests/test_drizzle_kernel.py``: every kernel, pixfrac,
rotation and scale against the package on the same pixel maps), so that one pass gives the
image, the weight map and the scatter sums at once and parts of a frame drizzle on several
threads (the package's kernel runs on one thread, twice per frame for the scatter: 12x
bilinear's time on this project's 2-core VM, against 3-4x now); kernels ``square`` (the
classic drizzle), ``turbo`` (an axis-aligned square drop: faster, approximate under rotation)
and ``point``.

Conventions
    The pixel map of a frame (:func:`skystack.regrid.pixmap.pixel_map` run from the frame to
    the grid: the output grid's 0-based x, y of every input pixel centre) comes from the same
    WCS / star alignment the bilinear stack uses. The output grid is the stack's grid, made
    ``1/scale`` times finer by :func:`scaled_grid` when ``scale`` (output pixel side in units
    of the grid's pixels, DrizzlePac's ``final_scale`` relative to the grid) is not 1.
Values and weights
    Each frame's values are normalised as in every combine (``v * scale_k + zero_k``) and
    drizzled in ``cps`` units (values are surface brightness: not rescaled); the frame's
    weight ``w_k`` (``--weights``; 1 without) is its drizzle weight map, 0 on NaN / masked
    input pixels and on pixels whose position is invalid. The image is the weighted drizzle
    mean sum_k w_k a_k v_k / sum_k w_k a_k (``a`` the overlap area of the drop with the output
    pixel, in output pixels). ``--conserve-flux`` multiplies the values by each frame's
    output/input pixel-area ratio (median over the frame), so that sums over output pixels give
    fluxes.
Products
    ``EXPMAP`` holds drizzle's weight map sum_k w_k a_k (seconds when ``--weights exptime``,
    otherwise in the weights' units: its ``BUNIT`` and ``DRZWHT`` say which). ``COUNT`` is the
    number of frames whose drizzle raised the pixel's weight by more than 1e-3 of a full
    overlap (a frame masked there, or whose drops miss it or only graze it, is not counted).
    ``UNCERT`` is the weighted scatter between the frames
    (``UNCMETH = scatter``): var_w * V / (1 - V) with var_w = E_w[v^2] - E_w[v]^2 and
    V = sum (w a)^2 / (sum w a)^2 (drizzle's squared-weight co-add of ones; 1/N for equal
    weights, i.e. the standard error s/sqrt(N) with s the N-1 standard deviation); NaN where
    fewer than two frames contribute. It ignores the covariance drizzle introduces between
    neighbouring output pixels. Rejection cannot apply to a drizzle co-add (it sees one frame at
    a time): ``--reject`` other than ``none`` is a one-line error, as are ``--method`` other
    than mean and ``--uncertainty model/propagate``.
Memory and tiles
    The output is drizzled one band of rows at a time (:func:`skystack.core.tiles.plan_tiles`
    within ``--mem-limit``): for each band and frame only the input rows whose drops can land
    in the band are read and mapped (from each input row's range of output rows, measured once
    per frame), with one more row on each side for the corners' interpolation; every drop is
    clipped to the band, so a band holds exactly what it would as part of the whole output
    (``tests/test_drizzle.py``). Memory holds five float64 sums and COUNT for one band plus one
    frame's band of input rows: it does not grow with the number of frames.
Threads and backend
    Within a band, a frame's input pixels are cut into chunks of rows (or of columns, for frames
    rotated by about 90 degrees) whose output rows are bounded; chunks whose bounds do not
    overlap run on ``workers`` threads at once, the others in later passes
    (:func:`skystack.regrid.drizzle_kernel.chunk_passes`), so no two threads add to one pixel.
    Drizzle runs on the CPU whatever ``--backend`` says: ``--backend gpu`` is logged and the
    header's ``SKYSBKND``/``DRZBKND`` say CPU.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .config import CombineOptions
from .core.frame import Frame
from .core.grid import Grid
from .core.records import RunStats
from .core.tiles import Tile, plan_tiles
from .errors import SkystackError
from .normalization import frame_params
from .regrid.drizzle_kernel import (
    KERNEL_CODES,
    chunk_passes,
    chunk_row_reach,
    drizzle_chunks,
    row_extents,
)
from .regrid.pixmap import pixel_map

__all__ = ["KERNELS", "DrizzleParams", "drizzle_params", "scaled_grid", "drizzle_header",
           "expmap_header", "drizzle_frames", "FrameDrizzler"]

log = logging.getLogger("skystack")

KERNELS = ("square", "turbo", "point")
# Rows of input pixel map computed at once when measuring a frame's row ranges.
_MAP_PIXELS = 1 << 21
# Fraction of a full overlap (weight) below which a frame is not counted in COUNT at a pixel.
_MIN_OVERLAP = 1e-3


@dataclass(frozen=True)
class DrizzleParams:
    """``pixfrac`` in (0, 1]: the drop's side in input pixels; ``kernel`` one of
    :data:`KERNELS`; ``scale`` > 0: the output pixel side in units of the grid's pixels."""

    pixfrac: float = 1.0
    kernel: str = "square"
    scale: float = 1.0


def drizzle_params(interp: str, pixfrac: float | None, kernel: str | None,
                   scale: float | None, options: CombineOptions) -> DrizzleParams | None:
    """The drizzle parameters when ``interp == "drizzle"`` (None otherwise), checked against
    the combine ``options``; one-line :class:`SkystackError` for what drizzle cannot do or a
    drizzle option given without ``--interp drizzle``. ``None`` takes the default."""
    given = {"--pixfrac": pixfrac, "--drizzle-kernel": kernel, "--drizzle-scale": scale}
    if interp != "drizzle":
        extra = [name for name, v in given.items() if v is not None]
        if extra:
            raise SkystackError(f"{extra[0]} applies to --interp drizzle only")
        return None
    params = DrizzleParams(1.0 if pixfrac is None else pixfrac, kernel or "square",
                           1.0 if scale is None else scale)
    if not (isinstance(params.pixfrac, (int, float)) and 0 < params.pixfrac <= 1):
        raise SkystackError(f"invalid --pixfrac {params.pixfrac!r}: must be in (0, 1]")
    if params.kernel not in KERNELS:
        raise SkystackError(f"invalid --drizzle-kernel {params.kernel!r}: choose from "
                            f"{', '.join(KERNELS)}")
    if not (isinstance(params.scale, (int, float)) and math.isfinite(params.scale)
            and 0.05 <= params.scale <= 20):
        raise SkystackError(f"invalid --drizzle-scale {params.scale!r}: must be in [0.05, 20]")
    if options.reject != "none":
        raise SkystackError(f"--reject {options.reject} cannot apply to --interp drizzle (a "
                            "drizzle co-add sees one frame at a time): use --reject none")
    if options.method != "mean":
        raise SkystackError(f"--method {options.method} with --interp drizzle: drizzle makes a "
                            "weighted mean, use --method mean")
    if options.uncertainty in ("model", "propagate"):
        raise SkystackError(f"--uncertainty {options.uncertainty} with --interp drizzle: only "
                            "the scatter between frames is available (--uncertainty scatter)")
    return params


def scaled_grid(grid: Grid, scale: float) -> Grid:
    """``grid`` with pixels ``scale`` times its own (same sky area; ``ceil(n / scale)`` pixels
    per axis, pixel (0, 0)'s corner kept): CRPIX and the pixel scale matrix rescaled. A grid
    with SIP distortion cannot be rescaled this way (one-line error)."""
    if scale == 1:
        return grid

    def rescale(wcs: WCS) -> WCS:
        if wcs.sip is not None:
            raise SkystackError("--drizzle-scale: the output grid has SIP distortion; give a "
                                "grid without it (--grid-header) or --drizzle-scale 1")
        out = wcs.deepcopy()
        # 0-based x_old = scale * (x_new + 0.5) - 0.5, so in 1-based FITS pixels
        # CRPIX_new = (CRPIX_old - 0.5) / scale + 0.5.
        out.wcs.crpix = (np.asarray(wcs.wcs.crpix) - 0.5) / scale + 0.5
        if wcs.wcs.has_cd():
            out.wcs.cd = np.asarray(wcs.wcs.cd) * scale
        else:
            out.wcs.cdelt = np.asarray(wcs.wcs.cdelt) * scale
        return out

    shape = tuple(max(1, math.ceil(n / scale - 1e-9)) for n in grid.shape)
    product = rescale(grid.product_wcs) if grid.product_wcs is not None else None
    return Grid(rescale(grid.wcs), shape, product)


def drizzle_header(params: DrizzleParams, weights_kind: str) -> fits.Header:
    """Cards saying how the product was drizzled (added to the stack's header)."""
    header = fits.Header()
    header["INTERP"] = ("drizzle", "resampling onto the output grid")
    header["DRZKERN"] = (params.kernel, "drizzle kernel")
    header["DRZPFRAC"] = (float(params.pixfrac), "drizzle pixfrac (drop side, input px)")
    header["DRZSCALE"] = (float(params.scale), "output pixel side / grid pixel side")
    header["DRZBKND"] = ("cpu", "drizzle kernels on the CPU, any backend")
    header["DRZWHT"] = ("exptime" if weights_kind == "exptime" else "weights",
                        "EXPMAP = sum of frame weight x overlap")
    header["UNCMETH"] = ("scatter", "UNCERT: weighted scatter of drizzled frames")
    return header


def expmap_header(weights_kind: str) -> fits.Header:
    """The header of a drizzle product's EXPMAP plane (drizzle's weight map)."""
    unit = "s" if weights_kind == "exptime" else ""
    return fits.Header([("BUNIT", unit, "drizzle weight: sum of weight x overlap")])


class FrameDrizzler:
    """Drizzles one frame onto bands of the output grid (module docstring)."""

    def __init__(self, frame: Frame, wcs: WCS, grid: Grid, params: DrizzleParams,
                 scale: float, zero: float, weight: float, conserve_flux: bool,
                 step: int) -> None:
        self.frame, self.wcs, self.grid, self.params = frame, wcs, grid, params
        self.scale, self.zero, self.weight = scale, zero, weight
        self.step = step
        rows, cols = frame.shape
        if rows < 2 or cols < 2:
            # A pixel's footprint comes from its neighbours' positions: a frame one pixel
            # wide would drizzle nothing (its drops have no area) or at a guessed scale.
            raise SkystackError(f"{frame.label}: {rows}x{cols} pixels; drizzle needs frames of "
                                "at least 2x2 pixels (use --interp bilinear)")
        self.row_lo = np.full(rows, np.inf)
        self.row_hi = np.full(rows, -np.inf)
        band = max(1, _MAP_PIXELS // cols)
        areas = []
        for r0 in range(0, rows, band):
            x, y = self._map(r0, min(rows, r0 + band))
            lo, hi, area = row_extents(x, y)
            self.row_lo[r0:r0 + y.shape[0]] = lo
            self.row_hi[r0:r0 + y.shape[0]] = hi
            areas.append(area)
        det = np.concatenate(areas)
        # Output pixels per input pixel (area); the drops' reach, in output rows, follows:
        # a corner lies within the neighbouring centres' map, or half a pixel beyond the
        # frame's edge centres (sqrt(2) output sides at most, under any rotation).
        self.area = float(np.median(det)) if det.size else 1.0
        self.ratio = 1.0 / math.sqrt(self.area)  # output pixel side in input pixels
        self.reach = 1.0 + 1.5 * math.sqrt(self.area) * (params.kernel != "point")
        self.iscale = 1.0 / self.area if conserve_flux else 1.0

    def _map(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """Grid x, y of the input pixels of rows [r0, r1) (float64, NaN where invalid)."""
        return pixel_map(self.grid.wcs, self.wcs, self.frame.shape, rows=slice(r0, r1),
                         step=self.step)

    def input_rows(self, tile: Tile) -> tuple[int, int] | None:
        """Input rows [lo, hi) whose drops can reach ``tile``'s rows, or None."""
        lo, hi = tile.r0 - self.reach, tile.r1 - 1 + self.reach
        near = (self.row_hi >= lo) & (self.row_lo <= hi)
        hit = np.flatnonzero(near)
        return None if hit.size == 0 else (int(hit[0]), int(hit[-1]) + 1)

    def add(self, tile: Tile, sums: _BandSums, offset: float, pool, workers: int) -> bool:
        """Drizzle the frame onto ``tile``'s ``sums`` (its ``frame`` plane zeroed first), on
        ``pool``'s ``workers`` threads (None, 1: here). Returns whether any input row could
        reach the band."""
        span = self.input_rows(tile)
        if span is None or self.weight <= 0:
            return False
        lo, hi = span
        # One more row each side: a pixel's corners are interpolated from its neighbours.
        plo, phi = max(0, lo - 1), min(self.frame.shape[0], hi + 1)
        cols = self.frame.shape[1]
        data = np.empty((phi - plo, cols), np.float32)
        self.frame.source.read(Tile(plo, phi, 0, cols), data)
        x, y = self._map(plo, phi)
        x -= tile.c0
        y -= tile.r0
        # Normalised (v * scale + zero) and, with --conserve-flux, times the area ratio.
        data *= np.float32(self.scale * self.iscale)
        data += np.float32(self.zero * self.iscale)
        weight = np.full(data.shape, np.float32(self.weight))
        pfo = self.params.pixfrac * math.sqrt(self.area) / 2 if self.params.kernel == "turbo" \
            else 0.0
        sums.frame[...] = 0.0
        passes = _passes(y, lo - plo, hi - plo, pfo, workers if pool is not None else 1)
        args = (data, weight, x, y)
        kernel, pixfrac, ratio = KERNEL_CODES[self.params.kernel], self.params.pixfrac, self.ratio
        for chunks in passes:
            parts = [chunks] if pool is None else np.array_split(chunks, workers)
            jobs = [(*args, part, kernel, pixfrac, ratio, offset, *sums.planes())
                    for part in parts if part.shape[0]]
            if pool is None or len(jobs) == 1:
                for job in jobs:
                    drizzle_chunks(*job)
            else:
                for future in [pool.submit(drizzle_chunks, *job) for job in jobs]:
                    future.result()
        return True


# Input pixels per chunk side: chunks of one pass run on different threads.
_CHUNK = 16


def _passes(y: np.ndarray, r0: int, r1: int, pfo: float, workers: int) -> list[np.ndarray]:
    """The rows [r0, r1) of the input as chunks (row0, row1, col0, col1) grouped into passes
    whose chunks cannot write the same output pixel (:func:`chunk_passes`), so that a pass's
    chunks can run on different threads: chunks of rows, or of columns when rows leave too
    little to run at once (frames rotated by about 90 degrees to the grid). One pass of one
    chunk for one worker."""
    rows, cols = y.shape
    if workers <= 1:
        return [np.array([[r0, r1, 0, cols]], np.int64)]
    # Rounding to the nearest output row and a turbo drop's half-side widen the bound.
    margin = 1.0 + pfo
    best: list[np.ndarray] = []
    for axis in ("rows", "cols"):
        if axis == "rows":
            chunks = np.array([[r, min(r1, r + _CHUNK), 0, cols] for r in range(r0, r1, _CHUNK)],
                              np.int64)
        else:
            chunks = np.array([[r0, r1, c, min(cols, c + _CHUNK)]
                               for c in range(0, cols, _CHUNK)], np.int64)
        passes = [chunks[p] for p in chunk_passes(chunk_row_reach(y, chunks, margin))]
        if not best or len(passes) < len(best):
            best = passes
        if len(chunks) >= 2 * workers * len(passes):  # enough chunks per pass already
            break
    return best


def _offset(first: FrameDrizzler) -> float:
    """A typical drizzled value (the first frame's median, normalised) subtracted before
    squaring, so E[v^2] - E[v]^2 does not lose the variance under a bright background."""
    from .normalization import frame_statistic, sample_rows

    value = frame_statistic(first.frame, "median", sample_rows(first.frame.shape))
    value = (value * first.scale + first.zero) * first.iscale
    return float(value) if math.isfinite(value) else 0.0


class _BandSums:
    """The float64 sums of one band (:func:`skystack.regrid.drizzle_kernel.drizzle_chunks`)
    and its COUNT."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.weight, self.values, self.squared_weight, self.deviations, self.frame = (
            np.zeros(shape) for _ in range(5))
        self.count = np.zeros(shape, np.int32)

    def planes(self) -> tuple[np.ndarray, ...]:
        return self.weight, self.values, self.squared_weight, self.deviations, self.frame


def drizzle_frames(frames: list[Frame], grid: Grid, options: CombineOptions, sinks, *,
                   wcs_list: list[WCS], params: DrizzleParams, conserve_flux: bool = False,
                   progress=None, max_tile_rows: int | None = None,
                   step: int = 32, workers: int = 1) -> RunStats:
    """Drizzle ``frames`` onto ``grid`` band by band into ``sinks`` (module docstring): each
    sink gets ``write_tile(tile, image, uncertainty, count, mask=count == 0,
    extras={"EXPMAP": weight map})``. ``options`` validated, with ``method`` mean and
    ``reject`` none (:func:`drizzle_params`); ``workers`` threads drizzle the parts of a frame
    that cannot write the same output pixel."""
    t0 = time.perf_counter()
    fp = frame_params(frames, options, wcs_list)
    drizzlers = [FrameDrizzler(f, w, grid, params, float(fp.scale[k]), float(fp.zero[k]),
                               float(fp.weights[k]), conserve_flux, step)
                 for k, (f, w) in enumerate(zip(frames, wcs_list))]
    offset = _offset(drizzlers[0])
    # Per output pixel: five float64 sums, COUNT and the written planes (< 8 frames' worth).
    tiles = plan_tiles(grid.shape, 8, options.mem_limit, max_rows=max_tile_rows, min_tiles=2)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="skystack-drizzle") \
        if workers > 1 else None
    try:
        for i, tile in enumerate(tiles):
            sums = _BandSums(tile.shape)
            for d in drizzlers:
                if d.add(tile, sums, offset, pool, workers):
                    # Counted where it added more than a thousandth of a full overlap: a drop's
                    # edge brushing a neighbour by rounding is not a contribution.
                    sums.count += sums.frame > _MIN_OVERLAP * d.weight
            _write(sinks, tile, sums, offset)
            if progress is not None:
                progress(i + 1, len(tiles))
    finally:
        if pool is not None:
            pool.shutdown()
    return RunStats(len(frames), len(tiles), tiles[0].shape, time.perf_counter() - t0, 0.0, 0.0)


def _write(sinks, tile: Tile, sums: _BandSums, offset: float) -> None:
    """Image, UNCERT (weighted scatter, module docstring), COUNT, EXPMAP of one band."""
    weight = sums.weight
    empty = ~(weight > 0)
    with np.errstate(all="ignore"):
        mean = sums.values / weight
        mean_dev = mean - offset
        var = np.maximum(sums.deviations / weight - mean_dev ** 2, 0.0)
        v = sums.squared_weight / weight ** 2
        uncert = np.sqrt(var * v / (1.0 - v)).astype(np.float32)
    image = mean.astype(np.float32)
    image[empty] = np.nan
    count = np.where(empty, 0, sums.count).astype(np.int32)
    uncert[empty | (count < 2) | ~(v < 1.0 - 1e-6)] = np.nan
    for sink in sinks:
        sink.write_tile(tile, image, uncert, count, mask=count == 0,
                        extras={"EXPMAP": weight.astype(np.float32)})
