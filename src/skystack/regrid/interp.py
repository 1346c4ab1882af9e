"""Sampling one input image at fractional pixel positions, exactly like ``reproject_interp``.

Conventions (shared with :mod:`skystack.regrid.pixmap`):

* Coordinates are 0-based pixel coordinates in float64, with pixel *centres* at integers: pixel
  ``image[j, i]`` covers ``x`` in ``[i - 0.5, i + 0.5)`` and ``y`` in ``[j - 0.5, j + 0.5)``.
  ``x`` runs along columns (axis 1) and ``y`` along rows (axis 0), as in NumPy.
* Values are in the image's own units (e.g. ADU per input pixel); nothing is rescaled unless
  :func:`pixel_area_ratio` is applied (flux conservation).
* A result is NaN when the position is NaN, falls outside the image, or its interpolation window
  holds a NaN pixel. The *footprint* of a resampled image is its finite pixels (:func:`footprint`).

The rules are those of ``reproject.reproject_interp(order='bilinear' | 'nearest-neighbor')``
(reproject 0.21, which clips the coordinates and then calls ``scipy.ndimage.map_coordinates``
with ``mode='constant', cval=nan``), checked against it in ``tests/test_reproject_core.py``:

1. Per axis of length ``n``: a NaN coordinate, one below ``-0.5`` or one at or above ``n - 0.5``
   gives NaN. A coordinate in ``[-0.5, 0)`` snaps to ``0`` and one in ``[n - 1, n - 0.5)`` to
   ``n - 1``, so the outer half of each border pixel takes the border pixel's value.
2. Bilinear: the 2×2 window starts at ``i0 = min(floor(c), n - 2)`` with weight ``t = c - i0`` on
   pixel ``i0 + 1`` and ``1 - t`` on ``i0``. All four pixels are multiplied even when a weight is
   zero, so a NaN anywhere in the window makes the output NaN (also at exact integer positions).
3. Nearest neighbour: pixel ``floor(c + 0.5)`` (halves round up, computed in float64 as SciPy does).
4. Clamped Lanczos-3/-4 (:func:`lanczos3`, :func:`lanczos4`; no reproject counterpart): rule 1
   and the bilinear window of rule 2 (its NaN rule and, for clamping, its value range), weights
   from the ``2a × 2a`` footprint around it renormalised over the taps inside the image and not
   NaN. Details in :func:`lanczos3`.
5. An axis of length 1 (not covered by reproject's rules, which assume ``n >= 2``): after rule 1
   the coordinate is ``0`` and that single pixel is used with weight 1 along that axis; this is
   also what ``reproject_interp`` returns for such an image.

The kernels are Numba functions compiled with ``nogil=True, cache=True`` (no ``parallel``, so the
disk cache works): callers may run them on row bands from several threads. Arithmetic is float64;
results are stored as float32. The Lanczos kernels let the compiler fuse multiply-adds
(``fastmath={'contract'}``, as nvcc does on the GPU; no other fast-math licence, so NaN tests
stay): 12-16 % faster, differences at float64 rounding only.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..errors import SkystackError

__all__ = ["bilinear", "nearest", "lanczos3", "lanczos4", "resample", "footprint",
           "pixel_area_ratio", "reach", "METHODS"]


@njit(nogil=True, cache=True, inline="always")
def _snap(c: float, n: int) -> float:
    """Rule 1: the snapped coordinate, or NaN when outside ``[-0.5, n - 0.5)`` or NaN."""
    if not (c >= -0.5 and c < n - 0.5):  # also catches NaN
        return math.nan
    if c < 0.0:
        return 0.0
    if c >= n - 1:
        return float(n - 1)
    return c


@njit(nogil=True, cache=True)
def row_span(x: np.ndarray, y: np.ndarray, height: int) -> tuple[float, float]:
    """Lowest and highest ``y`` among positions with finite ``x`` and ``y`` in ``[-0.5,
    height - 0.5)``: the rows of a frame of ``height`` rows that sampling ``(x, y)`` can touch
    (``(inf, -inf)`` when none). One pass, instead of a handful of NumPy temporaries."""
    lo = math.inf
    hi = -math.inf
    rows, cols = y.shape
    for r in range(rows):
        for c in range(cols):
            v = y[r, c]
            if v >= -0.5 and v < height - 0.5 and not math.isnan(x[r, c]) \
                    and not math.isinf(x[r, c]):
                lo = min(lo, v)
                hi = max(hi, v)
    return lo, hi


@njit(nogil=True, cache=True)
def bilinear_band(region: np.ndarray, r_lo: int, height: int, x: np.ndarray, y: np.ndarray,
                  out: np.ndarray) -> None:
    """:func:`bilinear` of a frame of ``height`` rows of which only rows ``[r_lo, r_lo +
    region.shape[0])`` are given (``region``): the rules, snapping included, are those of the
    whole frame. The region must hold every row the positions need (see :func:`row_span`: one
    row below its lowest and two above its highest)."""
    nx = region.shape[1]
    rows, cols = out.shape
    for r in range(rows):
        for c in range(cols):
            cx = _snap(x[r, c], nx)
            cy = _snap(y[r, c], height)
            if math.isnan(cx) or math.isnan(cy):
                out[r, c] = math.nan
                continue
            if nx == 1:
                x0 = 0
                x1 = 0
                tx = 0.0
            else:
                x0 = min(int(math.floor(cx)), nx - 2)
                x1 = x0 + 1
                tx = cx - x0
            if height == 1:
                y0 = 0
                y1 = 0
                ty = 0.0
            else:
                y0 = min(int(math.floor(cy)), height - 2)
                y1 = y0 + 1
                ty = cy - y0
            y0 -= r_lo
            y1 -= r_lo
            v00 = np.float64(region[y0, x0])
            v01 = np.float64(region[y0, x1])
            v10 = np.float64(region[y1, x0])
            v11 = np.float64(region[y1, x1])
            sx = 1.0 - tx
            out[r, c] = (1.0 - ty) * (sx * v00 + tx * v01) + ty * (sx * v10 + tx * v11)


@njit(nogil=True, cache=True)
def nearest_band(region: np.ndarray, r_lo: int, height: int, x: np.ndarray, y: np.ndarray,
                 out: np.ndarray) -> None:
    """:func:`nearest` of a frame given by a band of its rows (as :func:`bilinear_band`)."""
    nx = region.shape[1]
    rows, cols = out.shape
    for r in range(rows):
        for c in range(cols):
            cx = _snap(x[r, c], nx)
            cy = _snap(y[r, c], height)
            if math.isnan(cx) or math.isnan(cy):
                out[r, c] = math.nan
                continue
            i = min(int(math.floor(cx + 0.5)), nx - 1)
            j = min(int(math.floor(cy + 0.5)), height - 1) - r_lo
            out[r, c] = region[j, i]


# Positions closer than this (px) to a pixel centre take that pixel's value: the sinc formula
# would divide by an underflowing d**2 there, and the error is far below float32's resolution.
_CENTRE_SNAP = 1e-12


@njit(nogil=True, cache=True)
def _lanczos_tables(a: int) -> tuple[np.ndarray, np.ndarray]:
    """``sin(pi m / a)`` and ``cos(pi m / a)`` of each tap's integer offset ``m = a - 1 - k``
    (kernels/sk_resample.cuh holds the same values as literals)."""
    sm = np.empty(2 * a)
    cm = np.empty(2 * a)
    for k in range(2 * a):
        m = a - 1 - k
        sm[k] = math.sin(math.pi * m / a)
        cm[k] = math.cos(math.pi * m / a)
    return sm, cm


# Taylor coefficients (-1)**k / (2k + 1)!, k = 0..7, and (-1)**k / (2k)!, k = 0..8: on
# [0, pi/3] the truncated series are within 7e-15 of sin and cos. The GPU code evaluates the same
# polynomials in the same order (kernels/sk_resample.cuh), so both compute the same weights
# without calling sin/cos.
_SIN_TAYLOR = (1.0, -0.16666666666666666, 0.008333333333333333, -0.0001984126984126984,
               2.7557319223985893e-06, -2.505210838544172e-08, 1.6059043836821613e-10,
               -7.647163731819816e-13)
_COS_TAYLOR = (1.0, -0.5, 0.041666666666666664, -0.001388888888888889, 2.48015873015873e-05,
               -2.755731922398589e-07, 2.08767569878681e-09, -1.1470745597729725e-11,
               4.779477332387385e-14)


@njit(nogil=True, cache=True, inline="always")
def _sin_cos_small(phi: float) -> tuple[float, float]:
    """``sin(phi)`` and ``cos(phi)`` for ``0 <= phi <= pi / 3``: the Taylor polynomials in
    ``p = phi**2`` by Estrin's scheme (pairs, then powers ``p**2``, ``p**4``), a short chain of
    dependent operations instead of Horner's long one."""
    ks = _SIN_TAYLOR
    kc = _COS_TAYLOR
    p = phi * phi
    p2 = p * p
    p4 = p2 * p2
    s01 = ks[0] + p * ks[1]
    s23 = ks[2] + p * ks[3]
    s45 = ks[4] + p * ks[5]
    s67 = ks[6] + p * ks[7]
    c01 = kc[0] + p * kc[1]
    c23 = kc[2] + p * kc[3]
    c45 = kc[4] + p * kc[5]
    c67 = kc[6] + p * kc[7]
    s = (s01 + p2 * s23) + p4 * (s45 + p2 * s67)
    c = (c01 + p2 * c23) + p4 * (c45 + p2 * (c67 + p2 * kc[8]))
    return phi * s, c


@njit(nogil=True, cache=True, inline="always")
def _lanczos_weights(t: float, a: int, sm: np.ndarray, cm: np.ndarray, w: np.ndarray) -> None:
    """Normalised 1-D Lanczos-``a`` weights of the ``2a`` taps ``x0 - a + 1 .. x0 + a`` for a
    position ``t`` in ``[0, 1]`` past ``x0``: ``w[k] = L(t + a - 1 - k) / sum``.

    With ``d = t + m`` (``m = a - 1 - k`` integer), ``L(d) = a sin(pi d) sin(pi d / a) /
    (pi d)**2`` and ``sin(pi d) = (-1)**m sin(pi t)``: the factor ``a sin(pi t) / pi**2`` is
    common to every tap and cancels in the normalisation, and ``sin(pi d / a)`` follows from
    ``sin``/``cos`` of ``pi t / a`` by the angle sum (``sm``, ``cm`` from
    :func:`_lanczos_tables`), which :func:`_sin_cos_small` evaluates as polynomials."""
    n = 2 * a
    for k in range(n):
        w[k] = 0.0
    if t < _CENTRE_SNAP:
        w[a - 1] = 1.0
        return
    if t > 1.0 - _CENTRE_SNAP:
        w[a] = 1.0
        return
    sa, ca = _sin_cos_small(math.pi * t / a)
    total = 0.0
    sign = 1.0 if (a - 1) % 2 == 0 else -1.0  # (-1)**m, m = a - 1 - k
    for k in range(n):
        d = t + (a - 1 - k)
        v = sign * (sa * cm[k] + ca * sm[k]) / (d * d)
        sign = -sign
        w[k] = v
        total += v
    inv = 1.0 / total
    for k in range(n):
        w[k] = w[k] * inv


_TABLE_STEPS = 4096
"""Intervals per pixel of the CPU's table of Lanczos weights (see :func:`_weight_table`)."""


@njit(nogil=True, cache=True)
def _weight_table(a: int) -> np.ndarray:
    """Exact normalised weights (:func:`_lanczos_weights`) at ``t = i / _TABLE_STEPS``,
    ``i = 0 .. _TABLE_STEPS``: shape ``(_TABLE_STEPS + 1, 2a)``. Linear interpolation in it is
    within 3e-8 of the exact weights (second derivative below 4 over steps of 1/4096 px), and
    the interpolated weights still sum to 1; it replaces two polynomial sines and ``2a``
    divisions per axis by ``2a`` multiply-adds."""
    sm, cm = _lanczos_tables(a)
    table = np.empty((_TABLE_STEPS + 1, 2 * a))
    w = np.empty(2 * a)
    for i in range(_TABLE_STEPS + 1):
        _lanczos_weights(i / _TABLE_STEPS, a, sm, cm, w)
        table[i] = w
    return table


@njit(nogil=True, cache=True, inline="always")
def _table_weights(t: float, a: int, table: np.ndarray, w: np.ndarray) -> None:
    """The weights of ``t`` in ``[0, 1]`` from :func:`_weight_table`, interpolated linearly.
    Exact at ``t = 0`` and ``t = 1``, where the table holds a single 1 (``lo + f * (hi - lo)``
    then rounds to ``hi`` exactly: ``hi - lo`` is exact for these entries). No branch: the
    loop stays a straight run of multiply-adds."""
    u = t * _TABLE_STEPS
    i = min(int(u), _TABLE_STEPS - 1)
    f = u - i
    for k in range(2 * a):
        lo = table[i, k]
        w[k] = lo + f * (table[i + 1, k] - lo)


@njit(nogil=True, cache=True, inline="always")
def _inner_taps4(region: np.ndarray, j0: int, i0: int, wx: np.ndarray, wy: np.ndarray) -> float:
    """``sum_j wy[j] sum_i wx[i] region[j0 + j, i0 + i]`` over the 8x8 taps, summed as column
    sums over the rows first (each column in row order), then ``wx`` times the column sums in
    column order: the general loop of :func:`lanczos_band`, with the eight column sums in
    named locals (registers) instead of an array that the compiler must store every row."""
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = 0.0
    for kj in range(8):
        row = region[j0 + kj]
        w = wy[kj]
        c0 += w * np.float64(row[i0])
        c1 += w * np.float64(row[i0 + 1])
        c2 += w * np.float64(row[i0 + 2])
        c3 += w * np.float64(row[i0 + 3])
        c4 += w * np.float64(row[i0 + 4])
        c5 += w * np.float64(row[i0 + 5])
        c6 += w * np.float64(row[i0 + 6])
        c7 += w * np.float64(row[i0 + 7])
    return (wx[0] * c0 + wx[1] * c1 + wx[2] * c2 + wx[3] * c3 + wx[4] * c4 + wx[5] * c5
            + wx[6] * c6 + wx[7] * c7)


@njit(nogil=True, cache=True, inline="always")
def _inner_taps3(region: np.ndarray, j0: int, i0: int, wx: np.ndarray, wy: np.ndarray) -> float:
    """:func:`_inner_taps4` for the 6x6 taps of Lanczos-3."""
    c0 = c1 = c2 = c3 = c4 = c5 = 0.0
    for kj in range(6):
        row = region[j0 + kj]
        w = wy[kj]
        c0 += w * np.float64(row[i0])
        c1 += w * np.float64(row[i0 + 1])
        c2 += w * np.float64(row[i0 + 2])
        c3 += w * np.float64(row[i0 + 3])
        c4 += w * np.float64(row[i0 + 4])
        c5 += w * np.float64(row[i0 + 5])
    return wx[0] * c0 + wx[1] * c1 + wx[2] * c2 + wx[3] * c3 + wx[4] * c4 + wx[5] * c5


@njit(nogil=True, cache=True, inline="always")
def lanczos_band(region: np.ndarray, r_lo: int, height: int, x: np.ndarray, y: np.ndarray,
                 out: np.ndarray, a: int) -> None:
    """Clamped Lanczos-``a`` samples of a frame given by a band of its rows (as
    :func:`bilinear_band`; the band must hold ``a`` rows below the lowest position's row and
    ``a + 1`` above the highest's, see :func:`reach`). Rules in :func:`lanczos3`. Inlined
    into :func:`lanczos3_band` and :func:`lanczos4_band`, where ``a`` is a constant that the
    compiler unrolls the tap loops with."""
    nx = region.shape[1]
    rows, cols = out.shape
    wx = np.empty(2 * a)
    wy = np.empty(2 * a)
    col = np.empty(2 * a)
    table = _weight_table(a)
    band_hi = r_lo + region.shape[0]
    for r in range(rows):
        for c in range(cols):
            cx = _snap(x[r, c], nx)
            cy = _snap(y[r, c], height)
            if math.isnan(cx) or math.isnan(cy):
                out[r, c] = math.nan
                continue
            # The bilinear window (rule 2): NaN rule and clamp range.
            x0 = 0 if nx == 1 else min(int(math.floor(cx)), nx - 2)
            y0 = 0 if height == 1 else min(int(math.floor(cy)), height - 2)
            x1 = min(x0 + 1, nx - 1)
            y1 = min(y0 + 1, height - 1)
            v00 = np.float64(region[y0 - r_lo, x0])
            v01 = np.float64(region[y0 - r_lo, x1])
            v10 = np.float64(region[y1 - r_lo, x0])
            v11 = np.float64(region[y1 - r_lo, x1])
            if math.isnan(v00 + v01 + v10 + v11):  # bilinear's NaN rule (also +inf - inf)
                out[r, c] = math.nan
                continue
            lo = min(min(v00, v01), min(v10, v11))
            hi = max(max(v00, v01), max(v10, v11))
            _table_weights(cx - x0, a, table, wx)
            _table_weights(cy - y0, a, table, wy)
            j_first = max(y0 - a + 1, 0)
            j_last = min(y0 + a, height - 1)
            if j_first < r_lo or j_last >= band_hi:
                raise ValueError("lanczos_band: the band lacks rows the footprint needs")
            i_first = max(x0 - a + 1, 0)
            i_last = min(x0 + a, nx - 1)
            ox = a - 1 - x0  # wx index of column i is i + ox
            oy = a - 1 - y0
            acc = math.nan
            wsum = 1.0
            if i_first == x0 - a + 1 and i_last == x0 + a and j_first == y0 - a + 1 \
                    and j_last == y0 + a:
                # Fast path away from the edges: 2a x 2a taps (loops of a constant length),
                # weights summing to 1; a NaN tap makes acc NaN and sends it to the general path.
                # Rows are folded into 2a column sums first (_inner_taps4/3): 2a independent
                # sums per row instead of one chain of dependent adds (a few % faster).
                if a == 4:
                    acc = _inner_taps4(region, j_first - r_lo, i_first, wx, wy)
                elif a == 3:
                    acc = _inner_taps3(region, j_first - r_lo, i_first, wx, wy)
                else:
                    for ki in range(2 * a):
                        col[ki] = 0.0
                    for kj in range(2 * a):
                        row = region[j_first - r_lo + kj]
                        wj = wy[kj]
                        for ki in range(2 * a):
                            col[ki] += wj * np.float64(row[i_first + ki])
                    acc = 0.0
                    for ki in range(2 * a):
                        acc += wx[ki] * col[ki]
            if math.isnan(acc):  # at an edge or NaN taps: leave them out, renormalise
                acc = 0.0
                wsum = 0.0
                for j in range(j_first, j_last + 1):
                    row = region[j - r_lo]
                    row_acc = 0.0
                    row_w = 0.0
                    for i in range(i_first, i_last + 1):
                        v = np.float64(row[i])
                        if not math.isnan(v):
                            row_acc += wx[i + ox] * v
                            row_w += wx[i + ox]
                    acc += wy[j + oy] * row_acc
                    wsum += wy[j + oy] * row_w
            v = acc / wsum
            out[r, c] = lo if v < lo else (hi if v > hi else v)  # clamp (NaN stays NaN)


@njit(nogil=True, cache=True, fastmath={'contract'})
def lanczos3_band(region: np.ndarray, r_lo: int, height: int, x: np.ndarray, y: np.ndarray,
                  out: np.ndarray) -> None:
    """:func:`lanczos3` of a frame given by a band of its rows (see :func:`lanczos_band`)."""
    lanczos_band(region, r_lo, height, x, y, out, 3)


@njit(nogil=True, cache=True, fastmath={'contract'})
def lanczos4_band(region: np.ndarray, r_lo: int, height: int, x: np.ndarray, y: np.ndarray,
                  out: np.ndarray) -> None:
    """:func:`lanczos4` of a frame given by a band of its rows (see :func:`lanczos_band`)."""
    lanczos_band(region, r_lo, height, x, y, out, 4)


BAND_METHODS = {"bilinear": bilinear_band, "nearest": nearest_band,
                "lanczos3": lanczos3_band, "lanczos4": lanczos4_band}
"""Sampling kernels of a band of a frame's rows, by name."""

_REACH = {"bilinear": 1, "nearest": 1, "lanczos3": 3, "lanczos4": 4}


def reach(method: str) -> int:
    """How far (input px) a method's window reaches from the position's pixel ``floor(c)``:
    a band must hold rows ``floor(ylo) - reach`` to ``floor(yhi) + reach + 1`` (the same
    margins for columns) to sample like the whole frame. 1 for bilinear and nearest (its
    traditional margin), ``a`` for Lanczos-``a``."""
    if method not in _REACH:
        raise SkystackError(
            f"unknown resampling method {method!r} (choose from {', '.join(_REACH)})")
    return _REACH[method]


@njit(nogil=True, cache=True)
def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """Bilinear samples of ``image`` at ``(x, y)`` written into ``out`` (reproject's rules).

    Parameters
    ----------
    image : float32 array, shape (ny, nx)
        Input pixels; NaN marks missing pixels.
    x, y : float64 arrays, 2-D, same shape as ``out``
        0-based input column (``x``) and row (``y``) coordinates, pixel centres at integers.
    out : float32 array, 2-D
        Receives the samples; NaN where rule 1 or a NaN in the 2×2 window applies.
    """
    bilinear_band(image, 0, image.shape[0], x, y, out)


@njit(nogil=True, cache=True)
def nearest(image: np.ndarray, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """Nearest-neighbour samples of ``image`` at ``(x, y)`` into ``out`` (reproject's rules).

    Same arguments and conventions as :func:`bilinear`; the pixel taken is ``floor(c + 0.5)``
    along each axis after the snapping of rule 1, NaN outside the image.
    """
    nearest_band(image, 0, image.shape[0], x, y, out)


@njit(nogil=True, cache=True)
def lanczos3(image: np.ndarray, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """Clamped Lanczos-3 samples of ``image`` at ``(x, y)`` into ``out`` (as SWarp's default
    ``LANCZOS3`` resampling, with clamping against ringing).

    Same arguments and conventions as :func:`bilinear`. Per axis the kernel is
    ``L(d) = sinc(d) sinc(d / 3)`` for ``|d| < 3`` (``sinc(u) = sin(pi u) / (pi u)``) over the
    six pixels ``x0 - 2 .. x0 + 3`` around the bilinear window's first pixel ``x0`` (rule 2);
    the 1-D weights are normalised to sum 1, so the 6×6 products do too. Then:

    * Rule 1 applies unchanged (NaN outside ``[-0.5, n - 0.5)``; the outer half-pixels snap),
      so the footprint is bilinear's, and a NaN in the bilinear 2×2 window gives NaN.
    * Taps outside the image or holding NaN are left out and the remaining weights are
      renormalised to sum 1 (their sum never drops below 0.56 for Lanczos-4 and 0.80 for
      Lanczos-3, because the always-valid 2×2 centre dominates); a frame's edge thus costs no
      footprint and a masked pixel only blanks the four output positions around it.
    * Clamping: the result is clamped to ``[min, max]`` of the bilinear 2×2 window, so a sharp
      star cannot ring below (or above) its neighbouring pixels. SWarp does not clamp; Siril
      offers "interpolation clamping" for its default Lanczos-4; we always clamp.
    * Positions on a pixel centre return that pixel exactly.
    * Speed: the CPU interpolates the weights linearly in a table of the exact ones every
      1/4096 px (within 3e-8 of them, :func:`_weight_table`); the GPU code computes them
      exactly. Both agree to float32 rounding.
    """
    lanczos_band(image, 0, image.shape[0], x, y, out, 3)


@njit(nogil=True, cache=True)
def lanczos4(image: np.ndarray, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """Clamped Lanczos-4 samples (Siril's default kernel): :func:`lanczos3` with ``a = 4``,
    an 8×8 footprint ``x0 - 3 .. x0 + 4``."""
    lanczos_band(image, 0, image.shape[0], x, y, out, 4)


METHODS = {"bilinear": bilinear, "nearest": nearest, "lanczos3": lanczos3,
           "lanczos4": lanczos4}
"""Sampling kernels by name (the ``method`` of :func:`resample`)."""


def resample(image: np.ndarray, x: np.ndarray, y: np.ndarray, method: str = "bilinear",
             *, out: np.ndarray | None = None) -> np.ndarray:
    """Sample ``image`` at input pixel positions ``(x, y)``, as ``reproject_interp`` does.

    Parameters
    ----------
    image : array, shape (ny, nx)
        Input pixels, in any unit (converted to native float32 if needed). NaN = missing.
    x, y : float arrays of one shape
        0-based input column and row coordinates (pixel centres at integers), e.g. from
        :func:`skystack.regrid.pixel_map`. Converted to float64: float32 resolves only about
        5e-4 px at ``x ≈ 9000``. NaN positions give NaN.
    method : {"bilinear", "nearest", "lanczos3", "lanczos4"}
        ``"bilinear"`` matches ``order='bilinear'``; ``"nearest"`` matches
        ``order='nearest-neighbor'``; the clamped Lanczos kernels are :func:`lanczos3` and
        :func:`lanczos4` (reproject has no Lanczos).
    out : float32 array of ``x.shape``, optional
        Where to write the result (allocated when omitted).

    Returns
    -------
    float32 array of ``x.shape``
        The samples, in the image's units; NaN outside the image and where the interpolation
        window holds a NaN pixel (see the module docstring for the exact rules).
    """
    kernel = METHODS.get(method)
    if kernel is None:
        raise SkystackError(
            f"unknown resampling method {method!r} (choose from {', '.join(METHODS)})")
    image = np.asarray(image)
    if image.ndim != 2:
        raise SkystackError(f"resample needs a 2-D image, got shape {image.shape}")
    if image.dtype != np.float32 or not image.dtype.isnative:
        image = image.astype(np.float32)
    image = np.ascontiguousarray(image)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise SkystackError(f"resample: x {x.shape} and y {y.shape} have different shapes")
    shape = x.shape
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise SkystackError(f"resample: out must be float32 of shape {shape}")
    if x.ndim == 2:
        kernel(image, x, y, out)
    else:  # the kernels take 2-D maps: run on a (1, size) view and copy back
        flat = np.empty((1, x.size), dtype=np.float32)
        kernel(image, x.reshape(1, -1), y.reshape(1, -1), flat)
        out[...] = flat.reshape(shape)
    return out


def footprint(values: np.ndarray) -> np.ndarray:
    """The footprint of a resampled image: ``True`` where the value is finite.

    ``reproject`` returns ``~isnan(values)`` as float 1.0/0.0; this is the same wherever the input
    holds no infinities (an infinite input pixel counts as covered there, as not covered here).
    """
    return np.isfinite(values)


def pixel_area_ratio(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``|det J|`` of the output → input pixel mapping: output pixel area in input pixels.

    Multiply a resampled image by this to conserve flux (values per input pixel become values
    per output pixel); ``reproject_interp`` itself does not do this.

    Parameters
    ----------
    x, y : float64 arrays, shape (rows, cols)
        A pixel map (input coordinates of consecutive output pixels), e.g. from
        :func:`skystack.regrid.pixel_map`.

    Returns
    -------
    float64 array of ``x.shape``
        ``|dx/dc * dy/dr - dx/dr * dy/dc|`` from finite differences of the map
        (``numpy.gradient``: central differences inside, second-order one-sided ones on the first
        and last row/column, so a band's border rows differ slightly from those computed on a
        taller band: pass one extra map row on each side for band-independent results). NaN
        where a difference involves a NaN position. An axis of length 1 cannot be differenced
        and is an error.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape or min(x.shape) < 2:
        raise SkystackError(
            f"pixel_area_ratio needs two 2-D maps of one shape, each axis >= 2 (got {x.shape})")
    edge = 2 if min(x.shape) >= 3 else 1
    dx_dr, dx_dc = np.gradient(x, edge_order=edge)
    dy_dr, dy_dc = np.gradient(y, edge_order=edge)
    return np.abs(dx_dc * dy_dr - dx_dr * dy_dc)
