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
4. An axis of length 1 (not covered by reproject's rules, which assume ``n >= 2``): after rule 1
   the coordinate is ``0`` and that single pixel is used with weight 1 along that axis; this is
   also what ``reproject_interp`` returns for such an image.

The kernels are Numba functions compiled with ``nogil=True, cache=True`` (no ``parallel``, so the
disk cache works): callers may run them on row bands from several threads. Arithmetic is float64;
results are stored as float32.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..errors import SkystackError

__all__ = ["bilinear", "nearest", "resample", "footprint", "pixel_area_ratio", "METHODS"]


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


BAND_METHODS = {"bilinear": bilinear_band, "nearest": nearest_band}
"""Sampling kernels of a band of a frame's rows, by name."""

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


METHODS = {"bilinear": bilinear, "nearest": nearest}
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
    method : {"bilinear", "nearest"}
        ``"bilinear"`` matches ``order='bilinear'``; ``"nearest"`` matches
        ``order='nearest-neighbor'``.
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
