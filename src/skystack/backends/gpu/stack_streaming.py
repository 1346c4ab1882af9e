"""The GPU stack loop: frames → pinned host buffers → GPU (resample, coverage, combine) → sinks.

The GPU half of ``skystack stack`` (:func:`skystack.stacking.stack_frames` hands a GPU backend
the whole run). Per output tile, every frame is resampled on the GPU straight into its plane of
the device's frame-major tile block, which the combine kernels then read: the resampled block
never leaves the GPU. Only each frame's band of input pixels, its coarse node maps and the tile's
interpolation tables cross the bus.

Before the loop (host, once per run)
    Each frame's node maps over the whole output grid (:func:`skystack.regrid.pixmap.node_map`:
    astropy on the coarse node grid, SIP and reproject's 1 px round trip included) and the
    interpolation tables of the grid. From them, for each tile and frame, a box of input pixels
    that holds every 2×2 window the tile's pixels can touch (:func:`frame_regions`): it fixes
    the size of the pinned buffers, so tiles are planned from the GPU and host budgets before
    anything is read.
Per tile ``i`` (buffers alternate between two slots ``b = i % 2``, as in :mod:`.streaming`)::

    read threads:  wait until slot b's previous upload finished, then write the frame table,
                   the interpolation tables and the node maps into pinned[b], and read every
                   covering frame's band of input pixels (decoded to float32 by its source,
                   FITS BLANK and MASK honoured) into pinned[b] as well
    copy stream:   wait until the resampling of tile i-2 released staged[b]; upload
    compute:       wait for the upload and for slot b's outputs to be downloaded; resample every
                   frame into the block (kernels/reproject.cu), coverage and EXPMAP, combine
    download:      image, uncertainty, count, coverage, EXPMAP → pinned; then to the sinks

What the result equals
    The CPU stack (:func:`skystack.stacking.stack_frames` with the CPU backend): the node maps
    are the ones :func:`~skystack.regrid.pixmap.pixel_map` interpolates (evaluated once over the
    whole grid instead of band by band, which can differ only through astropy's iterative SIP
    inversion: ≪ 1e-9 px), interpolated and sampled with the CPU code's arithmetic
    (kernels/sk_resample.cuh), and the skip rules are the CPU's: a frame whose edges project
    outside the tile's rows is skipped, and so is one no pixel of the tile can reach (the CPU
    computes an all-NaN plane for it). With flux
    conservation the pixel-area ratio is taken per tile (one-sided differences at tile borders)
    like the CPU's, so the two agree exactly where they cut the grid into the same tiles (they
    do when ``max_tile_rows`` limits both).

Conventions as in :mod:`skystack.regrid`: 0-based pixel coordinates with pixel centres at
integers, NumPy axis order (rows, cols), NaN = no data.

Staged layout of a tile (one byte buffer; every section aligned to :data:`ALIGN` bytes):
``int64[n_frames][TABLE_FIELDS]`` frame table (the ``T_*`` columns, as ``sk::TableField`` in
kernels/sk_resample.cuh), then ``int32 start_r[rows]``, ``int32 start_c[cols]``,
``float64 w_r[rows][pr]``, ``float64 w_c[cols][pc]`` and, per covering frame, ``float64
node_x[node_rows][node_cols]``, ``node_y`` likewise and ``float32 band[band_rows][band_cols]``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from ...config import CombineOptions
from ...core.grid import Grid
from ...core.records import RunStats
from ...core.stack_loop import grid_rows_of, misses_tile, write_stack_tile
from ...core.tiles import OUTPUT_BYTES_PER_PIXEL, Tile, bytes_per_pixel, plan_tiles
from ...errors import SkystackError
from ...regrid.interp import METHODS, reach
from ...regrid.pixmap import node_map
from ..base import FrameParams, TileOutputs
from .kernels import choose_combine_kernel
from .streaming import (
    DEVICE_MEMORY_FRACTION,
    MIN_TILE_PIXELS,
    Device,
    DoubleBufferedRun,
    stream_tiles,
    upload_params,
)

log = logging.getLogger("skystack")

__all__ = ["stream_stack", "StackGeometry", "FrameGeometry", "TileLayout",
           "ResampleSpec", "stack_geometry", "frame_regions", "layout_tile", "pack_tile",
           "band_view", "TABLE_FIELDS"]

# Frame table columns: sk::TableField in kernels/sk_resample.cuh.
(T_FLAGS, T_BAND, T_ROW0, T_COL0, T_ROWS, T_COLS, T_HEIGHT, T_WIDTH, T_NODE_X,
 T_NODE_Y) = range(10)
TABLE_FIELDS = 10
ALIGN = 256
# Device / pinned bytes per tile pixel of one output slot: image, uncertainty, count (of the
# combine), coverage, EXPMAP.
OUT_BYTES = 4 + 4 + 4 + 4 + 4
# Safety margin (input px) added to the bounds of frame_regions for float64 rounding.
_BOUND_EPS = 1e-6


@dataclass(frozen=True)
class FrameGeometry:
    """One frame's part of the geometry: its shape, whole-grid node maps, rows it reaches."""

    shape: tuple[int, int]
    node_x: np.ndarray        # (grid node rows, grid node cols) float64, NaN = invalid
    node_y: np.ndarray
    bbox_rows: tuple[float, float] | None  # core.stack_loop.grid_rows_of: grid rows of its edges


@dataclass(frozen=True)
class StackGeometry:
    """The output grid's interpolation tables (shared by all frames) and every frame's nodes.

    ``start_r``/``w_r`` (every grid row) and ``start_c``/``w_c`` (every grid column) are those of
    :class:`skystack.regrid.pixmap.NodeMap` for the whole grid; ``t_r``/``t_c`` the position of
    each row/column inside its node window in node units (``sum_k w[k] * k``); ``lebesgue`` the
    largest ``sum |w_r| * sum |w_c|``.
    """

    grid_shape: tuple[int, int]
    start_r: np.ndarray
    w_r: np.ndarray
    start_c: np.ndarray
    w_c: np.ndarray
    t_r: np.ndarray
    t_c: np.ndarray
    lebesgue: float
    frames: list[FrameGeometry]

    @property
    def node_bytes(self) -> int:
        return sum(f.node_x.nbytes + f.node_y.nbytes for f in self.frames)


def stack_geometry(wcs_list: list, shapes: list[tuple[int, int]], grid: Grid, step: int = 32
                   ) -> StackGeometry:
    """Node maps of every frame over the whole grid (astropy on the nodes only) and the tables.

    ``grid`` is a :class:`skystack.core.grid.Grid`; ``shapes`` the frames' (rows, cols).
    """
    frames = []
    tables = None
    for wcs, shape in zip(wcs_list, shapes):
        nm = node_map(wcs, grid.wcs, grid.shape, step=step)
        if tables is None:
            tables = nm
        frames.append(FrameGeometry(tuple(int(s) for s in shape), nm.node_x, nm.node_y,
                                    grid_rows_of(wcs, shape, grid)))
    if tables is None:
        raise SkystackError("nothing to stack: no frames")
    w_r, w_c = tables.w_r, tables.w_c
    lebesgue = float(np.abs(w_r).sum(1).max() * np.abs(w_c).sum(1).max())
    return StackGeometry(tuple(grid.shape), tables.start_r, w_r, tables.start_c, w_c,
                         w_r @ np.arange(w_r.shape[1], dtype=np.float64),
                         w_c @ np.arange(w_c.shape[1], dtype=np.float64), lebesgue, frames)


def _stencil_fits(node: np.ndarray, pr: int, pc: int):
    """Per node window (pr × pc nodes): the least-squares plane ``a + b k + c m`` through the
    window's nodes (k, m their indices in the window along rows and columns) and the largest
    residual from it; NaN where the window holds a NaN node.

    Summed over shifted views of the node map (the design is the same for every window, so the
    normal equations decouple): no (windows × pr·pc) array is made.
    """
    sr, sc = node.shape[0] - pr + 1, node.shape[1] - pc + 1
    views = [[node[k:k + sr, m:m + sc] for m in range(pc)] for k in range(pr)]
    kbar, mbar = (pr - 1) / 2, (pc - 1) / 2
    total = np.zeros((sr, sc))
    along_k = np.zeros((sr, sc))
    along_m = np.zeros((sr, sc))
    for k in range(pr):
        for m in range(pc):
            total += views[k][m]
            along_k += (k - kbar) * views[k][m]
            along_m += (m - mbar) * views[k][m]
    var_k = pc * sum((k - kbar) ** 2 for k in range(pr))
    var_m = pr * sum((m - mbar) ** 2 for m in range(pc))
    b = along_k / var_k if var_k else along_k  # one node along the axis: along_k is 0 (or NaN)
    c = along_m / var_m if var_m else along_m
    a = total / (pr * pc) - b * kbar - c * mbar
    err = np.zeros((sr, sc))
    for k in range(pr):
        for m in range(pc):
            np.maximum(err, np.abs(views[k][m] - (a + b * k + c * m)), out=err)
    return a, b, c, err


def _pieces(start: np.ndarray, t: np.ndarray, lo: int, hi: int):
    """Runs of positions [lo, hi) sharing a node window: window starts, min and max of t."""
    s = start[lo:hi]
    tt = t[lo:hi]
    heads = np.concatenate([[0], np.flatnonzero(np.diff(s)) + 1])
    return s[heads], np.minimum.reduceat(tt, heads), np.maximum.reduceat(tt, heads)


def frame_regions(geom: StackGeometry, k: int, tiles: list[Tile], margin: int = 1
                  ) -> list[Tile | None]:
    """For each output tile, a box of frame ``k``'s input pixels (a :class:`Tile` of the frame)
    holding every window the tile's pixels can touch, or None where the frame cannot cover the
    tile (its plane is then all NaN, as on the CPU).

    Why the box is safe: the interpolation reproduces planes exactly (the Lagrange weights sum to
    1 and ``sum_k w_k k`` is the pixel's position ``t`` in its window), so a pixel's coordinate
    is ``P(t_r, t_c) + sum w e`` where ``P`` is any plane through the window's nodes and ``e``
    the residuals of the nodes from it: it lies within ``lebesgue * max|e|`` of ``P``, and ``P``
    over the pixels of a window takes its extremes at the corners of their ``t`` ranges. Windows
    holding a NaN node give NaN pixels and are ignored. The margins around the bounds are the
    CPU's: ``margin`` (:func:`skystack.regrid.interp.reach` of the interpolation: 1 for
    bilinear and nearest, ``a`` for Lanczos-``a``) rows and columns before, ``margin + 1``
    after, the same on both axes.
    """
    fg = geom.frames[k]
    height, width = fg.shape
    pr, pc = geom.w_r.shape[1], geom.w_c.shape[1]
    fits_x = _stencil_fits(fg.node_x, pr, pc)
    fits_y = _stencil_fits(fg.node_y, pr, pc)
    out: list[Tile | None] = []
    for tile in tiles:
        if misses_tile(fg.bbox_rows, tile):  # the CPU stack's skip
            out.append(None)
            continue
        sr, tr_lo, tr_hi = _pieces(geom.start_r, geom.t_r, tile.r0, tile.r1)
        sc, tc_lo, tc_hi = _pieces(geom.start_c, geom.t_c, tile.c0, tile.c1)
        boxes = []
        for a, b, c, err in (fits_x, fits_y):
            a, b, c, err = (v[np.ix_(sr, sc)] for v in (a, b, c, err))
            corners = [a + b * tr[:, None] + c * tc[None, :]
                       for tr in (tr_lo, tr_hi) for tc in (tc_lo, tc_hi)]
            lo = np.minimum.reduce(corners)
            hi = np.maximum.reduce(corners)
            pad = geom.lebesgue * err + _BOUND_EPS + 1e-9 * np.maximum(np.abs(lo), np.abs(hi))
            boxes.append((lo - pad, hi + pad))
        (xlo, xhi), (ylo, yhi) = boxes
        with np.errstate(invalid="ignore"):
            keep = (np.isfinite(xlo) & np.isfinite(xhi) & np.isfinite(ylo) & np.isfinite(yhi)
                    & (xhi >= -0.5) & (xlo < width - 0.5) & (yhi >= -0.5)
                    & (ylo < height - 0.5))
        if not keep.any():
            out.append(None)
            continue
        y0 = max(float(ylo[keep].min()), -0.5)
        y1 = min(float(yhi[keep].max()), height - 0.5)
        x0 = max(float(xlo[keep].min()), -0.5)
        x1 = min(float(xhi[keep].max()), width - 0.5)
        out.append(Tile(max(0, math.floor(y0) - margin), min(height, math.floor(y1) + margin + 2),
                        max(0, math.floor(x0) - margin), min(width, math.floor(x1) + margin + 2)))
    return out


@dataclass(frozen=True)
class ResampleSpec:
    """The scalar arguments of one ``reproject_tile`` launch (byte offsets into the staged
    buffer; see the module docstring for the layout)."""

    n_frames: int
    tile_rows: int
    tile_cols: int
    node_rows: int
    node_cols: int
    pr: int
    pc: int
    off_start_r: int
    off_start_c: int
    off_w_r: int
    off_w_c: int
    interp: str                     # a key of regrid.interp.METHODS
    conserve_flux: bool
    edge_order: int
    nbytes: int

    @property
    def npix(self) -> int:
        return self.tile_rows * self.tile_cols

    @property
    def nearest(self) -> bool:
        return self.interp == "nearest"


@dataclass(frozen=True)
class TileLayout:
    """Where everything of one tile goes in the staged buffer."""

    tile: Tile
    spec: ResampleSpec
    node_rows: tuple[int, int]      # node window of the tile in the grid's node maps
    node_cols: tuple[int, int]
    regions: list[Tile | None]      # per frame: its band of input pixels; None = skipped
    node_offsets: list[int]         # per frame: byte offset of node_x (-1 if skipped)
    band_offsets: list[int]         # per frame: byte offset of the band (-1 if skipped)
    table: np.ndarray               # int64 (n_frames, TABLE_FIELDS)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def layout_tile(geom: StackGeometry, tile: Tile, regions: list[Tile | None], *,
                nearest: bool = False, conserve_flux: bool = False,
                interp: str | None = None) -> TileLayout:
    """The staged layout of ``tile`` with these per-frame ``regions`` (:func:`frame_regions`);
    ``interp`` names the resampling (default bilinear, or nearest when ``nearest``)."""
    if interp is None:
        interp = "nearest" if nearest else "bilinear"
    n = len(regions)
    rows, cols = tile.shape
    pr, pc = geom.w_r.shape[1], geom.w_c.shape[1]
    sr = geom.start_r[tile.r0:tile.r1]
    sc = geom.start_c[tile.c0:tile.c1]
    nr = (int(sr.min()), int(sr.max()) + pr)
    nc = (int(sc.min()), int(sc.max()) + pc)
    node_bytes = (nr[1] - nr[0]) * (nc[1] - nc[0]) * 8
    pos = _aligned(n * TABLE_FIELDS * 8)
    off_sr = pos
    pos = _aligned(pos + rows * 4)
    off_sc = pos
    pos = _aligned(pos + cols * 4)
    off_wr = pos
    pos = _aligned(pos + rows * pr * 8)
    off_wc = pos
    pos = _aligned(pos + cols * pc * 8)
    table = np.zeros((n, TABLE_FIELDS), np.int64)
    node_offsets, band_offsets = [], []
    for k, reg in enumerate(regions):
        height, width = geom.frames[k].shape
        table[k, T_HEIGHT], table[k, T_WIDTH] = height, width
        if reg is None:
            node_offsets.append(-1)
            band_offsets.append(-1)
            continue
        node_offsets.append(pos)
        table[k, T_NODE_X] = pos
        table[k, T_NODE_Y] = pos + node_bytes
        pos = _aligned(pos + 2 * node_bytes)
        band_offsets.append(pos)
        table[k, T_FLAGS] = 1
        table[k, T_BAND] = pos
        table[k, T_ROW0], table[k, T_COL0] = reg.r0, reg.c0
        table[k, T_ROWS], table[k, T_COLS] = reg.shape
        pos = _aligned(pos + reg.shape[0] * reg.shape[1] * 4)
    edge = 2 if min(rows, cols) >= 3 else 1  # interp.pixel_area_ratio's choice
    spec = ResampleSpec(n, rows, cols, nr[1] - nr[0], nc[1] - nc[0], pr, pc, off_sr, off_sc,
                        off_wr, off_wc, interp, bool(conserve_flux), edge, pos)
    return TileLayout(tile, spec, nr, nc, list(regions), node_offsets, band_offsets, table)


def _view(buf: np.ndarray, offset: int, dtype, shape) -> np.ndarray:
    count = int(np.prod(shape))
    return buf[offset:offset + count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)


def pack_tile(buf: np.ndarray, geom: StackGeometry, layout: TileLayout) -> None:
    """Write the frame table, interpolation tables and node maps of ``layout`` into ``buf``
    (uint8, at least ``layout.spec.nbytes``); the bands are read separately (:func:`band_view`).
    """
    s = layout.spec
    t = layout.tile
    (n0, n1), (m0, m1) = layout.node_rows, layout.node_cols
    _view(buf, 0, np.int64, layout.table.shape)[...] = layout.table
    _view(buf, s.off_start_r, np.int32, (s.tile_rows,))[...] = geom.start_r[t.r0:t.r1] - n0
    _view(buf, s.off_start_c, np.int32, (s.tile_cols,))[...] = geom.start_c[t.c0:t.c1] - m0
    _view(buf, s.off_w_r, np.float64, (s.tile_rows, s.pr))[...] = geom.w_r[t.r0:t.r1]
    _view(buf, s.off_w_c, np.float64, (s.tile_cols, s.pc))[...] = geom.w_c[t.c0:t.c1]
    shape = (n1 - n0, m1 - m0)
    for k, off in enumerate(layout.node_offsets):
        if off < 0:
            continue
        fg = geom.frames[k]
        _view(buf, off, np.float64, shape)[...] = fg.node_x[n0:n1, m0:m1]
        _view(buf, off + shape[0] * shape[1] * 8, np.float64, shape)[...] = \
            fg.node_y[n0:n1, m0:m1]


def band_view(buf: np.ndarray, layout: TileLayout, k: int) -> np.ndarray | None:
    """Frame ``k``'s band in ``buf`` (float32, region shape), or None if it is skipped."""
    reg = layout.regions[k]
    if reg is None:
        return None
    return _view(buf, layout.band_offsets[k], np.float32, reg.shape)


# -- the loop -------------------------------------------------------------------------------------

@dataclass
class _Plan:
    tiles: list[Tile]
    layouts: list[TileLayout]
    slot_bytes: int
    max_pix: int


def _plan(geom: StackGeometry, r0: int, n: int, device_budget: int, host_budget: int,
          max_tile_rows: int | None, interp: str, conserve_flux: bool) -> _Plan:
    """Tiles of rows [r0, end) whose buffers fit both budgets (see module docstring)."""
    rows, cols = geom.grid_shape
    per_dev = 4 * n + 2 * OUT_BYTES
    per_host = 2 * OUT_BYTES + OUTPUT_BYTES_PER_PIXEL
    # First guess: a band of about 1.25 input pixels per frame and output pixel (frames of the
    # grid's scale, a little rotated, plus margins) in each of the two slots.
    fit = min(device_budget // (per_dev + 10 * n), host_budget // (per_host + 10 * n))
    while True:
        if fit < MIN_TILE_PIXELS:
            raise SkystackError(
                f"not enough GPU or host memory to stack {n} frames: even tiles of "
                f"{MIN_TILE_PIXELS} pixels do not fit (device budget "
                f"{device_budget / 2**20:.2f} MiB, host {host_budget / 2**20:.2f} MiB)")
        tiles = [Tile(t.r0 + r0, t.r1 + r0, t.c0, t.c1)
                 for t in plan_tiles((rows - r0, cols), n, fit * bytes_per_pixel(n),
                                     max_rows=max_tile_rows)]
        per_frame = [frame_regions(geom, k, tiles, reach(interp)) for k in range(n)]
        layouts = [layout_tile(geom, t, [per_frame[k][i] for k in range(n)], interp=interp,
                               conserve_flux=conserve_flux) for i, t in enumerate(tiles)]
        slot = max(lay.spec.nbytes for lay in layouts)
        max_pix = max(t.shape[0] * t.shape[1] for t in tiles)
        if 2 * slot + per_dev * max_pix <= device_budget and \
                2 * slot + per_host * max_pix <= host_budget:
            return _Plan(tiles, layouts, slot, max_pix)
        # Gently: a band's input rows do not shrink in proportion to its output rows (rotated
        # frames reach across many input rows in one output row), so halving overshoots.
        fit = fit * 3 // 4


def stream_stack(device: Device, frames: list, wcs_list: list, grid: Grid,
                 options: CombineOptions, params: FrameParams, exptimes: np.ndarray, sinks, *,
                 interp: str = "bilinear", conserve_flux: bool = False, progress=None,
                 max_tile_rows: int | None = None, read_workers: int = 4,
                 step: int = 32) -> RunStats:
    """Reproject ``frames`` onto ``grid`` and combine them on ``device`` into ``sinks``.

    Arguments as :func:`skystack.stacking.stack_frames` (which calls this for GPU backends);
    ``exptimes`` are the frames' exposure times (float32, 0 where unknown) for EXPMAP. Sinks get
    ``write_tile(tile, image, uncertainty, coverage, mask=count == 0, extras={"EXPMAP": ...})``.
    Returns :class:`skystack.core.records.RunStats`.
    """
    if interp not in METHODS:
        raise SkystackError(f"unknown resampling method {interp!r} (choose from "
                            f"{', '.join(METHODS)})")
    t_start = time.perf_counter()
    n = len(frames)
    geom = stack_geometry(wcs_list, [f.shape for f in frames], grid, step)
    choice = choose_combine_kernel(n, options)

    def start_run(first_row, device_budget, host_budget, readers, stager):
        plan = _plan(geom, first_row, n, device_budget, host_budget, max_tile_rows, interp,
                     conserve_flux)
        if conserve_flux and min(min(t.shape) for t in plan.tiles) < 2:
            raise SkystackError("--conserve-flux needs tiles of at least 2 rows and 2 columns "
                                "(raise --mem-limit)")
        return _StackRun(device, frames, geom, plan, choice, options, params, exptimes, readers,
                         stager)

    def on_tile(run, tile, done, left):
        image, unc, count, coverage, expmap = run.finished_views(tile)
        write_stack_tile(sinks, tile, TileOutputs(image, unc, count), coverage, expmap)
        if progress is not None:
            progress(done, done + left)

    # The node maps stay in host memory for the whole run.
    host_budget = max(int(options.mem_limit) - geom.node_bytes, int(options.mem_limit) // 4)
    sstats = stream_tiles(device, grid.shape, int(device.free_bytes() * DEVICE_MEMORY_FRACTION),
                          host_budget, start_run, on_tile, read_workers=read_workers)
    stats = RunStats(n, sstats.n_tiles, sstats.tile_shape, time.perf_counter() - t_start,
                     sstats.read_wait_seconds, 0.0)
    log.debug("stack (gpu): %s, %d out-of-memory retries", stats, sstats.retries)
    return stats


class _StackRun(DoubleBufferedRun):
    """A pass of the stack loop: staged tiles resampled, counted and combined on the device."""

    buffers = ("pinned_in", "pinned_out", "staged", "outs", "block", "params", "exptimes")

    def __init__(self, device: Device, frames, geom: StackGeometry, plan: _Plan, choice,
                 options: CombineOptions, params: FrameParams, exptimes, readers,
                 stager) -> None:
        super().__init__(device, plan.tiles, stager)
        self.frames = frames
        self.geom = geom
        self.plan = plan
        self.choice = choice
        self.options = options
        self.readers = readers
        self.n = len(frames)
        d = device
        slot, max_pix = plan.slot_bytes, plan.max_pix
        self.pinned_in = [d.pinned(slot, np.uint8) for _ in range(2)]
        self.staged = [d.empty(slot, np.uint8) for _ in range(2)]
        kinds = (np.float32, np.float32, np.int32, np.int32, np.float32)
        self.pinned_out = [tuple(d.pinned(max_pix, k) for k in kinds) for _ in range(2)]
        self.outs = [tuple(d.empty(max_pix, k) for k in kinds) for _ in range(2)]
        self.block = d.empty(self.n * max_pix, np.float32)
        self.params = upload_params(d, params)
        self.exptimes = d.upload(np.ascontiguousarray(exptimes, np.float32))

    # -- host side ---------------------------------------------------------------------------
    def _read(self, i: int) -> None:
        layout = self.plan.layouts[i]
        b = i % 2
        self.device.synchronize(self.uploaded[b])  # pinned_in[b] no longer being uploaded
        buf = self.pinned_in[b]
        pack_tile(buf, self.geom, layout)
        futures = []
        for k, frame in enumerate(self.frames):
            reg = layout.regions[k]
            if reg is not None:
                futures.append(self.readers.submit(frame.source.read, reg,
                                                   band_view(buf, layout, k)))
        for f in futures:
            f.result()

    # -- device side -------------------------------------------------------------------------
    def _launch(self, i: int) -> None:
        d = self.device
        spec = self.plan.layouts[i].spec
        b = i % 2
        npix = spec.npix
        d.wait(self.copy_stream, self.computed[b])  # staged[b] was resampled (tile i-2)
        d.copy_h2d(self.staged[b], self.pinned_in[b], spec.nbytes, self.copy_stream)
        d.record(self.uploaded[b], self.copy_stream)
        d.wait(self.compute_stream, self.uploaded[b])
        d.wait(self.compute_stream, self.downloaded[b])  # outs[b] of tile i-2 downloaded
        # The block is laid out (n, npix) for this tile: frames at a stride of npix.
        d.resample(self.staged[b], spec, self.block, self.compute_stream)
        img, unc, cnt, cov, exp = self.outs[b]
        d.coverage(self.block, self.n, npix, self.exptimes, cov, exp, self.compute_stream)
        d.combine(self.block, self.n, npix, self.choice, self.options, self.params,
                  (img, unc, cnt), self.compute_stream)
        d.record(self.computed[b], self.compute_stream)
        d.wait(self.download_stream, self.computed[b])
        for host, dev in zip(self.pinned_out[b], self.outs[b]):
            d.copy_d2h(host, dev, npix * 4, self.download_stream)
        d.record(self.downloaded[b], self.download_stream)

    def finished_views(self, tile: Tile):
        """image, uncertainty, count, coverage, EXPMAP of a finished tile (pinned views)."""
        b = self.slot_of(tile)
        npix = tile.shape[0] * tile.shape[1]
        return tuple(a[:npix].reshape(tile.shape) for a in self.pinned_out[b])
