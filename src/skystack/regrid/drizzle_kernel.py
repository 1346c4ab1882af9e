"""The drizzle kernels (square, turbo, point) of the ``drizzle`` package, rewritten in Numba.

The algorithm is that of ``drizzle.cdrizzle`` (Fruchter & Hook 2002; drizzle 3.x ``tdriz``):

square
    The input pixel ``(i, j)`` shrunk to a square of side ``pixfrac`` about its centre; its four
    corners ``(i -/+ h, j +/- h)`` (``h = pixfrac / 2``, clockwise as in ``tdriz``) are mapped to
    the output by bilinear interpolation of the pixel map between pixel centres (the cell is
    clamped at the map's edges, so corners beyond the first or last centre are extrapolated
    from the edge cell, as ``interpolate_point`` does). The drop's area on the output
    (``jaco``, the quadrilateral's signed area) and its exact overlap with each output pixel
    (``boxer``: the signed areas of the four edges clipped to the unit square) give the weight
    ``dow = float32(overlap * w / jaco)`` the pixel adds to output pixel ``(ii, jj)``.
turbo
    An axis-aligned square drop of half-side ``pixfrac / pscale_ratio / 2`` output pixels about
    the mapped centre (``pscale_ratio``: output pixel side in input pixels); ``dow`` is its
    overlap over ``pixfrac^2 / pscale_ratio^2`` (the fraction of the drop) times ``w``.
point
    The whole value to the output pixel nearest to the mapped centre, ``dow = w``.

Differences from ``tdriz`` (on purpose)
    ``tdriz`` keeps a running weighted mean in float32; here each call adds float64 sums
    (``sum dow``, ``sum dow * v``, ``sum dow^2``, ``sum dow * (v - offset)^2``) from which the
    caller forms the mean and the scatter, so the image agrees with ``tdriz`` to float32
    rounding (``tests/test_drizzle_kernel.py``). ``tdriz`` also skips input pixels whose
    centre maps outside its output array (its "scanner"): drops of those pixels that reach into
    the array are lost there, which is why skystack used to pad every band. Here every input
    pixel given is drizzled and only the output pixels outside the band are left out, so a band
    receives exactly what it would as part of the whole output.

Conventions: 0-based pixel coordinates, pixel centres at integers, NumPy axis order (``rows = y``).
The pixel maps ``mx, my`` hold the output (band) coordinates of the input pixel centres of the
rows given; rows outside ``[r_lo, r_hi)`` only serve as neighbours for the corners. NaN in the
map or a weight of 0 leaves the pixel out. Output rounding as ``tdriz``: nearest integer, half
away from zero.

Threads: every kernel is ``nogil``. The caller runs chunks of input pixels on several threads at
once only when the chunks cannot write the same output pixel (:func:`chunk_passes`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["SQUARE", "TURBO", "POINT", "KERNEL_CODES", "drizzle_chunks", "chunk_passes",
           "chunk_row_reach", "row_extents"]

SQUARE, TURBO, POINT = 0, 1, 2
KERNEL_CODES = {"square": SQUARE, "turbo": TURBO, "point": POINT}


@njit(nogil=True, cache=True, inline="always")
def _nint(v: float) -> int:
    """Nearest integer, half away from zero (C ``round``)."""
    return int(math.floor(v + 0.5)) if v >= 0.0 else -int(math.floor(0.5 - v))


@njit(nogil=True, cache=True, inline="always")
def _bilinear(m, xin: float, yin: float) -> float:
    """``m`` at (xin, yin) by bilinear interpolation; the cell is clamped to the map (edge
    cells extrapolate), as drizzle's ``interpolate_point``. A 1-pixel axis is constant."""
    ny, nx = m.shape
    i0 = int(xin)  # C's (int) cast: truncation toward zero
    j0 = int(yin)
    i0 = min(max(i0, 0), max(nx - 2, 0))
    j0 = min(max(j0, 0), max(ny - 2, 0))
    i1 = i0 + 1 if nx > 1 else i0
    j1 = j0 + 1 if ny > 1 else j0
    x = xin - i0 if nx > 1 else 0.0
    y = yin - j0 if ny > 1 else 0.0
    x1 = 1.0 - x
    y1 = 1.0 - y
    return (m[j0, i0] * x1 * y1 + m[j0, i1] * x * y1 + m[j1, i0] * x1 * y
            + m[j1, i1] * x * y)


@njit(nogil=True, cache=True, inline="always")
def _four_corners(m, i: int, j: int, h: float):
    """``m`` bilinearly interpolated at the corners (i - h, j + h), (i + h, j + h),
    (i + h, j - h), (i - h, j - h) of an inner pixel, from its 3 x 3 neighbourhood."""
    a = (1.0 - h) * (1.0 - h)
    b = (1.0 - h) * h
    c = h * h
    centre = m[j, i] * a
    left = m[j, i - 1] * b
    right = m[j, i + 1] * b
    up = m[j + 1, i] * b
    down = m[j - 1, i] * b
    return (left + centre + m[j + 1, i - 1] * c + up,
            centre + right + up + m[j + 1, i + 1] * c,
            down + m[j - 1, i + 1] * c + centre + right,
            m[j - 1, i - 1] * c + down + left + centre)


@njit(nogil=True, cache=True, inline="always")
def _edge_in_column(x1: float, y1: float, x2: float, y2: float, dx: float, slope: float):
    """The part of drizzle's ``sgarea`` that depends on the column only: the edge from
    (x1, y1) to (x2, y2) (x relative to the column's left side, y absolute) clipped to
    ``0 <= x <= 1``. Returns ``(sign, xlo, xhi, y at xlo, y at xhi, x1 y2 - y1 x2)``; sign 0
    when the edge does not cross the column (or is vertical: no area)."""
    if dx == 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    if dx < 0.0:
        sgn = -1.0
        xlo = x2
        xhi = x1
    else:
        sgn = 1.0
        xlo = x1
        xhi = x2
    if xlo >= 1.0 or xhi <= 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    xlo = max(xlo, 0.0)
    xhi = min(xhi, 1.0)
    return (sgn, xlo, xhi, y1 + slope * (xlo - x1), y1 + slope * (xhi - x1),
            x1 * y2 - y1 * x2)


@njit(nogil=True, cache=True, inline="always")
def _edge_in_row(edge, t: float, dx: float, inv_dy: float) -> float:
    """The rest of ``sgarea`` for the column's clipped edge (:func:`_edge_in_column`) and the
    output row whose lower side is at ``y = t``: the signed area between the edge and that
    side inside the unit square, step for step as ``sgarea`` (its divisions by ``dy`` as
    products with ``inv_dy``; rounding differs by about 1e-16 relative)."""
    sgn, xlo, xhi, ya, yb, det = edge
    if sgn == 0.0:
        return 0.0
    ylo = ya - t
    yhi = yb - t
    if ylo <= 0.0 and yhi <= 0.0:
        return 0.0
    if ylo >= 1.0 and yhi >= 1.0:
        return sgn * (xhi - xlo)
    det = det + t * dx  # x1 (y2 - t) - (y1 - t) x2
    if ylo < 0.0:
        ylo = 0.0
        xlo = det * inv_dy
    if yhi < 0.0:
        yhi = 0.0
        xhi = det * inv_dy
    if ylo <= 1.0:
        if yhi <= 1.0:
            return sgn * 0.5 * (xhi - xlo) * (yhi + ylo)
        xtop = (dx + det) * inv_dy
        return sgn * (0.5 * (xtop - xlo) * (1.0 + ylo) + xhi - xtop)
    xtop = (dx + det) * inv_dy
    return sgn * (0.5 * (xhi - xtop) * (1.0 + yhi) + xtop - xlo)


@njit(nogil=True, cache=True, inline="always")
def _edge_terms(xa: float, ya: float, xb: float, yb: float):
    """``dx, slope, 1/dy`` of the edge from (xa, ya) to (xb, yb) (0 where undefined; a
    vertical edge bounds no area and a horizontal one never needs ``1/dy``)."""
    dx = xb - xa
    dy = yb - ya
    slope = dy / dx if dx != 0.0 else 0.0
    inv_dy = 1.0 / dy if dy != 0.0 else 0.0
    return dx, slope, inv_dy


@njit(nogil=True, cache=True, inline="always")
def _deposit(ii, jj, dow, v, offset, sw, swv, sw2, swdd, fw):
    d = v - offset
    sw[jj, ii] += dow
    swv[jj, ii] += dow * v
    sw2[jj, ii] += dow * dow
    swdd[jj, ii] += dow * d * d
    fw[jj, ii] += dow


@njit(nogil=True, cache=True)
def drizzle_chunks(data, weight, mx, my, chunks, kernel, pixfrac, pscale_ratio, offset,
                   sw, swv, sw2, swdd, fw):
    """Drizzle the input pixels of ``chunks`` onto one band of the output.

    Parameters
    ----------
    data, weight : float32 (rows, cols)
        Values (already normalised) and weights of the input rows; weight 0 or a non-finite
        value leaves a pixel out.
    mx, my : float64 (rows, cols)
        Output x, y (band pixels, 0-based centres) of every input pixel centre; NaN invalid.
    chunks : int64 (n, 4)
        Rectangles ``row0, row1, col0, col1`` (half-open, in the rows given) to drizzle.
    kernel : int
        :data:`SQUARE`, :data:`TURBO` or :data:`POINT`.
    pixfrac, pscale_ratio : float
        Drop side in input pixels; output pixel side in input pixels (turbo only).
    offset : float
        Subtracted from each value before squaring (``swdd``), to keep the scatter's precision.
    sw, swv, sw2, swdd, fw : float64 (band rows, band cols)
        Sums updated in place: weight, weight x value, weight^2, weight x (value - offset)^2,
        and the frame's own weight (for COUNT; the caller zeroes it per frame).
    """
    orows, ocols = sw.shape
    nrows, ncols = mx.shape
    h = 0.5 * pixfrac
    pfo = pixfrac / pscale_ratio / 2.0
    dover_scale = pscale_ratio * pscale_ratio / (pixfrac * pixfrac)
    for c in range(chunks.shape[0]):
        for j in range(chunks[c, 0], chunks[c, 1]):
            for i in range(chunks[c, 2], chunks[c, 3]):
                wv = weight[j, i]
                v = data[j, i]
                if not (wv != 0.0 and math.isfinite(v) and math.isfinite(wv)):
                    continue
                if kernel == POINT:
                    ox = mx[j, i]
                    oy = my[j, i]
                    if not (math.isfinite(ox) and math.isfinite(oy)):
                        continue
                    ii = _nint(ox)
                    jj = _nint(oy)
                    if 0 <= ii < ocols and 0 <= jj < orows:
                        _deposit(ii, jj, np.float64(np.float32(wv)), v, offset,
                                 sw, swv, sw2, swdd, fw)
                elif kernel == TURBO:
                    ox = mx[j, i]
                    oy = my[j, i]
                    if not (math.isfinite(ox) and math.isfinite(oy)):
                        continue
                    xxi = ox - pfo
                    xxa = ox + pfo
                    yyi = oy - pfo
                    yya = oy + pfo
                    for jj in range(max(_nint(yyi), 0), min(_nint(yya), orows - 1) + 1):
                        dy = min(yya, jj + 0.5) - max(yyi, jj - 0.5)
                        if dy <= 0.0:
                            continue
                        for ii in range(max(_nint(xxi), 0), min(_nint(xxa), ocols - 1) + 1):
                            dx = min(xxa, ii + 0.5) - max(xxi, ii - 0.5)
                            if dx > 0.0:
                                dow = np.float64(np.float32(dx * dy * dover_scale * wv))
                                _deposit(ii, jj, dow, v, offset, sw, swv, sw2, swdd, fw)
                else:
                    # Corners clockwise: (i - h, j + h), (i + h, j + h), (i + h, j - h),
                    # (i - h, j - h), as tdriz orders them. Inside the map, from the 3 x 3
                    # centres around the pixel (tdriz's interpolate_four_points).
                    if 0 < i < ncols - 1 and 0 < j < nrows - 1:
                        x0, x1, x2, x3 = _four_corners(mx, i, j, h)
                        y0, y1, y2, y3 = _four_corners(my, i, j, h)
                    else:
                        x0 = _bilinear(mx, i - h, j + h)
                        y0 = _bilinear(my, i - h, j + h)
                        x1 = _bilinear(mx, i + h, j + h)
                        y1 = _bilinear(my, i + h, j + h)
                        x2 = _bilinear(mx, i + h, j - h)
                        y2 = _bilinear(my, i + h, j - h)
                        x3 = _bilinear(mx, i - h, j - h)
                        y3 = _bilinear(my, i - h, j - h)
                    if not (math.isfinite(x0) and math.isfinite(y0) and math.isfinite(x1)
                            and math.isfinite(y1) and math.isfinite(x2) and math.isfinite(y2)
                            and math.isfinite(x3) and math.isfinite(y3)):
                        continue
                    jaco = 0.5 * ((x1 - x3) * (y0 - y2) - (x0 - x2) * (y1 - y3))
                    if jaco == 0.0:
                        continue
                    w = wv / jaco
                    # Each edge's slope and 1/dy once per drop (boxer divides per pixel).
                    da, sa, ia = _edge_terms(x0, y0, x1, y1)
                    db, sb, ib = _edge_terms(x1, y1, x2, y2)
                    dc, sc, ic = _edge_terms(x2, y2, x3, y3)
                    dd, sd, id_ = _edge_terms(x3, y3, x0, y0)
                    jlo = max(_nint(min(min(y0, y1), min(y2, y3))), 0)
                    jhi = min(_nint(max(max(y0, y1), max(y2, y3))), orows - 1)
                    ilo = max(_nint(min(min(x0, x1), min(x2, x3))), 0)
                    ihi = min(_nint(max(max(x0, x1), max(x2, x3))), ocols - 1)
                    for ii in range(ilo, ihi + 1):
                        # Each edge clipped to the column once; then row by row.
                        u = ii - 0.5
                        ea = _edge_in_column(x0 - u, y0, x1 - u, y1, da, sa)
                        eb = _edge_in_column(x1 - u, y1, x2 - u, y2, db, sb)
                        ec = _edge_in_column(x2 - u, y2, x3 - u, y3, dc, sc)
                        ed = _edge_in_column(x3 - u, y3, x0 - u, y0, dd, sd)
                        for jj in range(jlo, jhi + 1):
                            t = jj - 0.5
                            dover = (_edge_in_row(ea, t, da, ia) + _edge_in_row(eb, t, db, ib)
                                     + _edge_in_row(ec, t, dc, ic) + _edge_in_row(ed, t, dd, id_))
                            if dover != 0.0:
                                dow = np.float64(np.float32(dover * w))
                                if dow != 0.0:
                                    _deposit(ii, jj, dow, v, offset, sw, swv, sw2, swdd, fw)


@njit(nogil=True, cache=True)
def _chunk_reach(my, chunks, margin, out):
    """Output rows ``[lo, hi]`` each chunk can write (``out[c] = lo, hi``; ``lo > hi`` when
    the chunk has no valid position). A drop's corners lie within the map of the pixel's
    neighbours, or (at the map's edges, extrapolated) at most one neighbour step beyond it:
    the range of ``my`` over the chunk and one more pixel on every side, widened by the
    largest step between neighbouring centres there and by ``margin``."""
    rows, cols = my.shape
    for c in range(chunks.shape[0]):
        lo = np.inf
        hi = -np.inf
        step = 0.0
        j0, j1 = max(chunks[c, 0] - 1, 0), min(chunks[c, 1] + 1, rows)
        i0, i1 = max(chunks[c, 2] - 1, 0), min(chunks[c, 3] + 1, cols)
        for j in range(j0, j1):
            for i in range(i0, i1):
                y = my[j, i]
                if y < lo:
                    lo = y
                if y > hi:
                    hi = y
                if i > i0:
                    d = abs(y - my[j, i - 1])
                    if d > step:
                        step = d
                if j > j0:
                    d = abs(y - my[j - 1, i])
                    if d > step:
                        step = d
        if lo <= hi:
            out[c, 0] = math.floor(lo - step - margin)
            out[c, 1] = math.ceil(hi + step + margin)
        else:
            out[c, 0] = 1
            out[c, 1] = 0


def chunk_row_reach(my: np.ndarray, chunks: np.ndarray, margin: float) -> np.ndarray:
    """(n, 2) int64: the output rows each chunk of :func:`drizzle_chunks` can write, a
    conservative bound (:func:`_chunk_reach`); ``margin`` covers rounding to the nearest row
    and a turbo drop's half-side."""
    out = np.empty((chunks.shape[0], 2), np.int64)
    _chunk_reach(my, chunks, float(margin), out)
    return out


@njit(nogil=True, cache=True)
def _row_extents(mx, my, row_lo, row_hi, areas, stride):
    """Per input row, the least and greatest output y of its valid centres (inf / -inf if
    none); ``areas`` gets |Jacobian| (output pixels per input pixel) at every ``stride``-th
    pixel along both axes (NaN where undefined). Returns how many areas were written."""
    rows, cols = my.shape
    n = 0
    for j in range(rows):
        lo = np.inf
        hi = -np.inf
        for i in range(cols):
            y = my[j, i]
            if y < lo:
                lo = y
            if y > hi:
                hi = y
        row_lo[j] = lo
        row_hi[j] = hi
        if j % stride == 0 and j + 1 < rows:
            for i in range(0, cols - 1, stride):
                det = ((mx[j, i + 1] - mx[j, i]) * (my[j + 1, i] - my[j, i])
                       - (mx[j + 1, i] - mx[j, i]) * (my[j, i + 1] - my[j, i]))
                if math.isfinite(det) and n < areas.shape[0]:
                    areas[n] = abs(det)
                    n += 1
    return n


def row_extents(mx: np.ndarray, my: np.ndarray,
                stride: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``row_lo, row_hi`` (float64 per input row: least and greatest output y of its valid
    centres, +inf / -inf for a row without any) and a sample of the map's |Jacobian| (output
    pixels per input pixel) at every ``stride``-th pixel, from the pixel maps of some rows."""
    rows, cols = my.shape
    row_lo = np.empty(rows)
    row_hi = np.empty(rows)
    areas = np.empty((rows // stride + 1) * (cols // stride + 1))
    n = _row_extents(mx, my, row_lo, row_hi, areas, stride)
    return row_lo, row_hi, areas[:n]


def chunk_passes(reach: np.ndarray) -> list[np.ndarray]:
    """Chunks grouped into passes whose output row ranges do not overlap (interval colouring:
    ranges sorted by start, each to the first pass that has ended before it begins, which
    uses the fewest passes). Chunks of one pass can run on different threads at once."""
    live = np.flatnonzero(reach[:, 0] <= reach[:, 1])
    order = live[np.argsort(reach[live, 0], kind="stable")]
    ends: list[int] = []
    passes: list[list[int]] = []
    for c in order:
        start, end = int(reach[c, 0]), int(reach[c, 1])
        for p, last in enumerate(ends):
            if last < start:
                passes[p].append(int(c))
                ends[p] = end
                break
        else:
            passes.append([int(c)])
            ends.append(end)
    return [np.asarray(p, np.int64) for p in passes]
