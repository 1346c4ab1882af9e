"""Pixel maps: where each output pixel falls in an input image, from the two WCS (SIP included).

:func:`pixel_map` gives, for every output pixel of a band of rows, the float64 input coordinates
that ``reproject.reproject_interp`` would compute with astropy per pixel, at a small fraction of
the cost: astropy (``all_pix2world`` / ``all_world2pix``, SIP and other distortions included) is
evaluated only on a coarse grid of *nodes*, and the coordinates in between are interpolated in
float64 with a separable 4-point cubic (Lagrange) interpolant.

Conventions: 0-based pixel coordinates, pixel centres at integers, NumPy axis order (``rows = y``,
``cols = x``). The maps are float64; float32 would resolve only about 5e-4 px at ``x ≈ 9000``.

Node grid
    Along an axis of ``n`` pixels the nodes are ``K + 1`` evenly spaced positions from ``0`` to
    ``n - 1`` inclusive (``K = ceil((n - 1) / step)``, at least 3 intervals), so the first and
    last row/column are always nodes and the spacing is at most ``step``. Nodes belong to the
    whole output grid, not to a band: a band evaluates only the nodes its rows need, so a pixel's
    coordinates do not depend on how the output is cut into bands (up to astropy's iterative SIP
    inversion, which stops per batch of points: identical in the tests, ≪ 1e-9 px in any case).
    An axis of at most 4 pixels has a node at every pixel (exact).
Interpolation
    Each pixel uses the 4×4 nodes around it (the window is shifted inwards at the grid's borders,
    so no extrapolation is needed). The interpolant is exact at the nodes and accurate to
    ``O(step⁴)`` for smooth mappings: about 1e-9 px on SIP-distorted, rotated frames of similar
    pixel scale at ``step = 32`` (measured in ``tests/test_reproject_core.py`` and the
    benchmark). Grids whose pixels are many input pixels wide magnify the error (measured on the
    test frame: 6e-4 px with 30× wider output pixels, 0.3 px with 150×): :func:`choose_step`
    checks the error and refines the spacing.
Invalid positions and the round trip
    Like ``reproject_interp``'s default ``roundtrip_coords=True``, a node whose input position
    does not map back to the node within 1 px (along either axis) is NaN, as is a node whose world
    coordinate or input position is invalid (astropy gives NaN). A pixel whose 4×4 stencil holds a
    NaN node is NaN. This is conservative: it can mark NaN up to about ``2 * step`` px more than
    reproject does next to such a region (which lies far outside the input image in practice,
    e.g. beyond the horizon of a projection or where a SIP polynomial folds over), and it tests
    the round trip at the nodes only, not at every pixel. With ``exact_near_invalid=True`` those
    pixels are instead computed one by one with astropy, giving exactly reproject's NaN pattern.
Threads
    astropy WCS objects are not thread-safe, so every astropy call here holds one module lock;
    the interpolation (Numba, ``nogil``) runs in parallel. Bands of one output may be mapped
    from several threads.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from astropy.wcs.utils import pixel_to_pixel, wcs_to_celestial_frame
from numba import njit

from ..errors import SkystackError

__all__ = ["pixel_map", "node_map", "NodeMap", "map_positions", "map_error", "choose_step",
           "check_celestial", "pix2pix"]


def check_celestial(wcs: object, what: str) -> WCS:
    """Return ``wcs`` if it is a 2-D celestial astropy WCS, else raise :class:`SkystackError`.

    ``what`` names it in the message (e.g. ``"frame 3"`` or a file name).
    """
    if not isinstance(wcs, WCS):
        raise SkystackError(f"{what}: expected an astropy WCS, got {type(wcs).__name__}")
    if wcs.pixel_n_dim != 2 or wcs.world_n_dim != 2:
        raise SkystackError(f"{what}: WCS has {wcs.pixel_n_dim} pixel axes, need 2")
    if not wcs.has_celestial or wcs.wcs.lng < 0 or wcs.wcs.lat < 0:
        raise SkystackError(f"{what}: WCS is not celestial (CTYPE = {list(wcs.wcs.ctype)})")
    _check_not_singular(wcs, what)
    return wcs


def _check_not_singular(wcs: WCS, what: str) -> None:
    """A WCS whose pixel scale matrix is not finite, or singular (zero CD/CDELT, or axes
    parallel to a part in 1e6), maps its whole image onto a line or a point: no grid or pixel
    map can be built from it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matrix = np.asarray(wcs.pixel_scale_matrix, dtype=np.float64)
    except Exception as exc:  # wcslib refuses e.g. a zero CDELT when it is set up
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SkystackError(f"{what}: invalid WCS ({msg})") from None
    biggest = float(np.abs(matrix).max()) if np.all(np.isfinite(matrix)) else math.nan
    if not biggest > 0 or not abs(float(np.linalg.det(matrix))) > 1e-12 * biggest ** 2:
        raise SkystackError(f"{what}: WCS pixel scale matrix (CD, or PC x CDELT) is singular "
                            f"or not finite: {matrix.tolist()}")


def _same_world(wcs_a: WCS, wcs_b: WCS) -> bool:
    """Whether world *values* of ``wcs_a`` can be fed to ``wcs_b`` unchanged (same frame/axes)."""
    if wcs_a.wcs.lng != wcs_b.wcs.lng or wcs_a.wcs.lat != wcs_b.wcs.lat:
        return False
    if list(wcs_a.wcs.cunit) != list(wcs_b.wcs.cunit):
        return False
    try:
        frame_a = wcs_to_celestial_frame(wcs_a)
        frame_b = wcs_to_celestial_frame(wcs_b)
    except ValueError:
        return False
    return bool(frame_a.is_equivalent_frame(frame_b))


# astropy's WCS objects are not thread-safe: two threads transforming with one WCS at once get
# wrong positions (seen here: ~5 % of a band's pixels). All astropy calls of this module hold
# this lock, so bands may be mapped from several threads; they are only the node grid's calls.
_ASTROPY_LOCK = threading.RLock()


def pix2pix(wcs_a: WCS, wcs_b: WCS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    with _ASTROPY_LOCK:
        if _same_world(wcs_a, wcs_b):
            world = wcs_a.pixel_to_world_values(x, y)
            px, py = wcs_b.world_to_pixel_values(*world)
        else:  # different celestial frames: let astropy's high-level API transform them
            px, py = pixel_to_pixel(wcs_a, wcs_b, x, y)
        return np.array(px, dtype=np.float64), np.array(py, dtype=np.float64)


def map_positions(wcs_in: WCS, wcs_out: WCS, x_out: np.ndarray, y_out: np.ndarray,
                  *, roundtrip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Input positions of output pixel positions, with astropy at every point (no interpolation).

    This is what ``reproject_interp`` computes per pixel (``pixel_to_pixel``, then with
    ``roundtrip`` the check that the positions map back within 1 px, NaN otherwise). World values
    go straight from one WCS to the other when both use the same celestial frame and axis order,
    and through astropy's frame transformations otherwise.

    Parameters
    ----------
    wcs_in, wcs_out : astropy WCS
        2-D celestial WCS of the input image and of the output grid.
    x_out, y_out : float arrays
        0-based output column and row positions (pixel centres at integers).

    Returns
    -------
    x_in, y_in : float64 arrays
        0-based input column and row positions; NaN where invalid or not round-tripping.
    """
    x_out = np.asarray(x_out, dtype=np.float64)
    y_out = np.asarray(y_out, dtype=np.float64)
    x_in, y_in = pix2pix(wcs_out, wcs_in, x_out, y_out)
    if roundtrip:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NaN comparisons
            xb, yb = pix2pix(wcs_in, wcs_out, x_in, y_in)
            bad = (np.abs(xb - x_out) > 1) | (np.abs(yb - y_out) > 1)
        x_in[bad] = np.nan
        y_in[bad] = np.nan
    bad = ~(np.isfinite(x_in) & np.isfinite(y_in))
    x_in[bad] = np.nan
    y_in[bad] = np.nan
    return x_in, y_in


def _axis_nodes(n: int, step: int) -> tuple[np.ndarray, float]:
    """Node positions along an axis of ``n`` pixels and their spacing (see module docstring)."""
    if n <= 4:
        return np.arange(n, dtype=np.float64), 1.0
    intervals = max(math.ceil((n - 1) / step), 3)
    spacing = (n - 1) / intervals
    nodes = np.arange(intervals + 1, dtype=np.float64) * spacing
    nodes[-1] = n - 1  # exact last pixel
    return nodes, spacing


def _axis_weights(pos: np.ndarray, n_nodes: int, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """First node and Lagrange weights of the (up to) 4-node window of each position."""
    p = min(4, n_nodes)
    u = pos / spacing
    start = np.clip(np.floor(u).astype(np.int64) - 1, 0, n_nodes - p)
    t = u - start
    weights = np.ones((pos.size, p), dtype=np.float64)
    for k in range(p):
        for m in range(p):
            if m != k:
                weights[:, k] *= (t - m) / (k - m)
    return start, weights


@njit(nogil=True, cache=True)
def _interp_map(node_x, node_y, start_r, w_r, start_c, w_c, out_x, out_y):  # pragma: no cover
    """Separable interpolation of the node maps onto the band: first along rows, then columns."""
    rows, cols = out_x.shape
    m = node_x.shape[1]
    pr = w_r.shape[1]
    pc = w_c.shape[1]
    tx = np.empty(m)
    ty = np.empty(m)
    if pc == 4:
        # Columns sharing their first node form runs (32 columns at step 32): within a run the
        # four node values are constants, so the inner loop is contiguous multiply-adds that
        # vectorise, with the weights transposed once to contiguous rows.
        wt = np.ascontiguousarray(w_c.T)
        run_start = np.empty(cols + 1, np.int64)
        n_runs = 0
        for c in range(cols):
            if c == 0 or start_c[c] != start_c[c - 1]:
                run_start[n_runs] = c
                n_runs += 1
        run_start[n_runs] = cols
    for r in range(rows):
        s = start_r[r]
        for j in range(m):
            ax = 0.0
            ay = 0.0
            for k in range(pr):
                w = w_r[r, k]
                ax += w * node_x[s + k, j]
                ay += w * node_y[s + k, j]
            tx[j] = ax
            ty[j] = ay
        if pc == 4:  # the usual case: runs of columns with the same four nodes
            for i in range(n_runs):
                c0 = run_start[i]
                c1 = run_start[i + 1]
                s = start_c[c0]
                x0, x1, x2, x3 = tx[s], tx[s + 1], tx[s + 2], tx[s + 3]
                y0, y1, y2, y3 = ty[s], ty[s + 1], ty[s + 2], ty[s + 3]
                ox = out_x[r]
                oy = out_y[r]
                for c in range(c0, c1):
                    w0 = wt[0, c]
                    w1 = wt[1, c]
                    w2 = wt[2, c]
                    w3 = wt[3, c]
                    ox[c] = w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3
                    oy[c] = w0 * y0 + w1 * y1 + w2 * y2 + w3 * y3
        else:
            for c in range(cols):
                s = start_c[c]
                ax = 0.0
                ay = 0.0
                for k in range(pc):
                    w = w_c[c, k]
                    ax += w * tx[s + k]
                    ay += w * ty[s + k]
                out_x[r, c] = ax
                out_y[r, c] = ay


def _band(rows: slice | None, height: int) -> tuple[int, int]:
    if rows is None:
        return 0, height
    if not isinstance(rows, slice) or rows.step not in (None, 1):
        raise SkystackError(f"pixel_map: rows must be a slice with step 1, got {rows!r}")
    start, stop, _ = rows.indices(height)
    return start, max(start, stop)


@dataclass(frozen=True)
class NodeMap:
    """The coarse node maps of a band of output rows and how its pixels interpolate them.

    What :func:`pixel_map` interpolates, without the interpolation (the GPU backend uploads it
    and interpolates on the device). Pixel ``(r, c)`` of the band (``r`` counted from
    ``rows[0]``) has input coordinate

    ``x = sum_m w_c[c, m] * (sum_k w_r[r, k] * node_x[start_r[r] + k, start_c[c] + m])``

    summed in exactly this order (rows first, then columns, each sum from ``k = 0`` / ``m = 0``
    up), and likewise ``y`` from ``node_y``. NaN nodes make every pixel whose window holds them
    NaN.

    Attributes
    ----------
    node_x, node_y : float64 arrays, shape (node rows, node cols)
        0-based input column / row coordinates (pixel centres at integers) of the nodes of the
        band (node rows ``first_node_row ...``, every node column), NaN where invalid or not
        round-tripping (see the module docstring).
    start_r : int64 array, shape (band rows,)
        First node row of each band row's window, relative to ``node_x``.
    w_r : float64 array, shape (band rows, pr)
        Lagrange weights of those ``pr = min(4, node rows of the grid)`` node rows.
    start_c, w_c : int64 array (cols,), float64 array (cols, pc)
        The same along the columns of the whole grid.
    rows : (int, int)
        The band: output rows ``[rows[0], rows[1])``.
    first_node_row : int
        Index of ``node_x``'s first row in the node grid of the whole output.
    """

    node_x: np.ndarray
    node_y: np.ndarray
    start_r: np.ndarray
    w_r: np.ndarray
    start_c: np.ndarray
    w_c: np.ndarray
    rows: tuple[int, int]
    first_node_row: int


def node_map(wcs_in: WCS, wcs_out: WCS, out_shape: tuple[int, int], *,
             rows: slice | None = None, step: int = 32) -> NodeMap:
    """The node maps of :func:`pixel_map` for a band of output rows, not interpolated.

    Arguments as :func:`pixel_map`. astropy is called only on the nodes the band needs (on the
    whole node grid when ``rows`` is None). See :class:`NodeMap` for how to interpolate; doing
    it as described gives :func:`pixel_map`'s coordinates bit for bit.
    """
    check_celestial(wcs_in, "input WCS")
    check_celestial(wcs_out, "output WCS")
    try:
        height, width = (int(v) for v in out_shape)
    except (TypeError, ValueError):
        raise SkystackError(
            f"pixel_map: out_shape must be (rows, cols), got {out_shape!r}") from None
    if height < 1 or width < 1:
        raise SkystackError(f"pixel_map: out_shape must be positive, got {out_shape!r}")
    if int(step) < 1:
        raise SkystackError(f"pixel_map: step must be >= 1, got {step!r}")
    step = int(step)
    r0, r1 = _band(rows, height)
    nodes_r, spacing_r = _axis_nodes(height, step)
    nodes_c, spacing_c = _axis_nodes(width, step)
    start_r, w_r = _axis_weights(np.arange(r0, r1, dtype=np.float64), nodes_r.size, spacing_r)
    start_c, w_c = _axis_weights(np.arange(width, dtype=np.float64), nodes_c.size, spacing_c)
    if r1 == r0:
        empty = np.empty((0, nodes_c.size))
        return NodeMap(empty, empty.copy(), start_r, w_r, start_c, w_c, (r0, r1), 0)
    first = int(start_r.min())
    last = int(start_r.max()) + w_r.shape[1]
    grid_c, grid_r = np.meshgrid(nodes_c, nodes_r[first:last])
    node_x, node_y = map_positions(wcs_in, wcs_out, grid_c, grid_r)
    return NodeMap(np.ascontiguousarray(node_x), np.ascontiguousarray(node_y),
                   start_r - first, w_r, start_c, w_c, (r0, r1), first)


def pixel_map(wcs_in: WCS, wcs_out: WCS, out_shape: tuple[int, int], *,
              rows: slice | None = None, step: int = 32,
              exact_near_invalid: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Input pixel coordinates of every output pixel of a band of output rows.

    Parameters
    ----------
    wcs_in : astropy WCS
        2-D celestial WCS of the input image (SIP and other distortions are honoured).
    wcs_out : astropy WCS
        2-D celestial WCS of the output grid.
    out_shape : (rows, cols)
        Shape of the whole output grid, NumPy order (``(NAXIS2, NAXIS1)``).
    rows : slice, optional
        The band of output rows to map (step 1); all rows by default.
    step : int
        Largest node spacing in output pixels (see the module docstring); 32 keeps the error
        near 1e-9 px for frames of similar pixel scale (see :func:`choose_step` otherwise).
    exact_near_invalid : bool
        Recompute the pixels whose 4×4-node stencil holds a NaN node with astropy, one by one
        (as :func:`map_positions`), instead of making them NaN: the NaN pattern is then exactly
        reproject's, at the cost of per-pixel astropy calls next to invalid regions (none when
        every node is valid, the usual case).

    Returns
    -------
    x, y : float64 arrays, shape (band rows, cols)
        0-based input column (``x``) and row (``y``) coordinates, pixel centres at integers, of
        output pixels ``[rows, :]``. NaN where the world coordinate or input position is invalid
        or fails the 1 px round trip, with the 4×4-node stencil rule of the module docstring.
    """
    nm = node_map(wcs_in, wcs_out, out_shape, rows=rows, step=step)
    r0, r1 = nm.rows
    width = nm.start_c.size
    out_x = np.empty((r1 - r0, width), dtype=np.float64)
    out_y = np.empty((r1 - r0, width), dtype=np.float64)
    if r1 == r0:
        return out_x, out_y
    _interp_map(nm.node_x, nm.node_y, nm.start_r, nm.w_r, nm.start_c, nm.w_c, out_x, out_y)
    if exact_near_invalid and np.isnan(nm.node_x).any():
        redo = np.nonzero(np.isnan(out_x))
        out_x[redo], out_y[redo] = map_positions(
            wcs_in, wcs_out, redo[1].astype(np.float64), (redo[0] + r0).astype(np.float64))
    return out_x, out_y


def map_error(wcs_in: WCS, wcs_out: WCS, out_shape: tuple[int, int], *, step: int = 32,
              in_shape: tuple[int, int] | None = None) -> float:
    """Estimated largest error (input px) of :func:`pixel_map` at this ``step``.

    The interpolated map is compared with astropy (:func:`map_positions`) at the centre of every
    cell of the node grid, where the cubic interpolation error peaks. When ``in_shape`` is given
    only the cells that may reach the input image count (the box of their corners' input
    positions, widened by a quarter of its size plus 2 px, meets the image), since the map does
    not matter where it leads outside the image. Costs about two node grids of astropy calls.

    Returns
    -------
    float
        ``max(hypot(dx, dy))`` over the finite check points, in input pixels (0.0 if none).
    """
    check_celestial(wcs_in, "input WCS")
    check_celestial(wcs_out, "output WCS")
    height, width = (int(v) for v in out_shape)
    nodes_r, spacing_r = _axis_nodes(height, int(step))
    nodes_c, spacing_c = _axis_nodes(width, int(step))
    grid_c, grid_r = np.meshgrid(nodes_c, nodes_r)
    node_x, node_y = map_positions(wcs_in, wcs_out, grid_c, grid_r)

    def centres(nodes: np.ndarray) -> np.ndarray:
        return (nodes[:-1] + nodes[1:]) / 2 if nodes.size > 1 else nodes

    pc, pr = (a.ravel() for a in np.meshgrid(centres(nodes_c), centres(nodes_r)))
    exact_x, exact_y = map_positions(wcs_in, wcs_out, pc, pr)
    start_r, w_r = _axis_weights(pr, nodes_r.size, spacing_r)
    start_c, w_c = _axis_weights(pc, nodes_c.size, spacing_c)
    est_x = np.zeros(pc.size)
    est_y = np.zeros(pc.size)
    for k in range(w_r.shape[1]):
        for m in range(w_c.shape[1]):
            w = w_r[:, k] * w_c[:, m]
            est_x += w * node_x[start_r + k, start_c + m]
            est_y += w * node_y[start_r + k, start_c + m]
    err = np.hypot(est_x - exact_x, est_y - exact_y)
    keep = np.isfinite(err)
    if in_shape is not None and nodes_r.size > 1 and nodes_c.size > 1:
        # A cell counts if the box of its corner nodes' input positions, widened by a quarter
        # of its size plus 2 px, meets the input image.
        ny, nx = in_shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells
            corners_x = np.stack([node_x[:-1, :-1], node_x[:-1, 1:], node_x[1:, :-1],
                                  node_x[1:, 1:]])
            corners_y = np.stack([node_y[:-1, :-1], node_y[:-1, 1:], node_y[1:, :-1],
                                  node_y[1:, 1:]])
            lo_x, hi_x = np.nanmin(corners_x, axis=0), np.nanmax(corners_x, axis=0)
            lo_y, hi_y = np.nanmin(corners_y, axis=0), np.nanmax(corners_y, axis=0)
        pad_x = (hi_x - lo_x) / 4 + 2
        pad_y = (hi_y - lo_y) / 4 + 2
        near = ((hi_x + pad_x >= -0.5) & (lo_x - pad_x <= nx - 0.5)
                & (hi_y + pad_y >= -0.5) & (lo_y - pad_y <= ny - 0.5))
        keep &= near.ravel()
    return float(err[keep].max()) if keep.any() else 0.0


def choose_step(wcs_in: WCS, wcs_out: WCS, out_shape: tuple[int, int], *,
                in_shape: tuple[int, int] | None = None, tol: float = 1e-4,
                step: int = 32) -> int:
    """The largest node spacing, ``step`` halved as needed, whose :func:`map_error` is <= ``tol``.

    For frames of similar pixel scale ``step = 32`` gives about 1e-7 px or better; strongly
    downsampling grids (output pixels tens of input pixels wide) over distorted frames need finer
    nodes. Call it once per frame and pass the result to every band's :func:`pixel_map`, so
    that all bands use one node grid. ``step = 1`` (astropy at every pixel) is always exact.
    """
    step = max(1, int(step))
    while step > 1 and map_error(wcs_in, wcs_out, out_shape, step=step, in_shape=in_shape) > tol:
        step = (step + 1) // 2
    return step
