"""Block samples of two unaligned frames at the same sky positions, equally smoothed: what
``--scale/--zero regression`` compares for a stack (:func:`skystack.frame_measures.
regression_params` with the frames' WCS).

Frame k is resampled bilinearly (as ``reproject_interp`` and the stack do) at the reference
frame's pixel centres of the sampled rows. Bilinear interpolation at a fractional position f
(per axis, in frame k's pixels) is a two-tap kernel ``[1 - f, f]``: it smooths frame k by a
variance ``f (1 - f)`` per axis, which the reference's raw pixels do not have. Averaged in 8x8
blocks that smoothing moves flux out of the blocks that hold a star's peak, so frame k's high
blocks come out lower than the reference's and the fitted scale too high (measured: +0.7 to
+1.9 % with sub-pixel offsets and noise; whole-pixel offsets and star-free fields unbiased). The
reference is therefore smoothed by a symmetric 3x3 kernel with the same second moments at each
pixel (the covariance ``J diag(fx (1 - fx), fy (1 - fy)) J^T`` in the reference's pixels, J the
map's Jacobian from frame k to the reference), without shifting it, before both are averaged in
blocks. Blocks that either frame does not cover entirely are NaN.

Conventions: 0-based pixel centres at integers, NumPy axis order; ``rows``: sorted reference
rows, whole 8-row blocks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .core.frame import Frame

__all__ = ["matched_block_samples", "block_means"]


@njit(nogil=True, cache=True)
def _smooth_matched(band, muu, mvv, muv, out):
    """``out[r, c]`` = the 3x3 kernel of second moments (muu, mvv, muv)[r, c] (variance along
    columns, rows, and their covariance, in pixels^2) applied to ``band`` rows r..r+2 (the
    output row r is band row r + 1); NaN at the first and last column or where a tap is NaN or
    a moment is not finite."""
    rows, cols = out.shape
    for r in range(rows):
        for c in range(cols):
            if c == 0 or c == cols - 1:
                out[r, c] = np.nan
                continue
            uu = muu[r, c]
            vv = mvv[r, c]
            uv = muv[r, c]
            if not (math.isfinite(uu) and math.isfinite(vv) and math.isfinite(uv)):
                out[r, c] = np.nan
                continue
            cp = 0.5 * max(uv, 0.0)  # weight of each of the two corners along the diagonal
            cm = 0.5 * max(-uv, 0.0)  # ... along the anti-diagonal
            au = max(0.5 * uu - cp - cm, 0.0)  # left and right neighbours
            av = max(0.5 * vv - cp - cm, 0.0)  # neighbours above and below
            centre = 1.0 - 2.0 * (au + av + cp + cm)
            j = r + 1
            out[r, c] = (centre * band[j, c] + au * (band[j, c - 1] + band[j, c + 1])
                         + av * (band[j - 1, c] + band[j + 1, c])
                         + cp * (band[j - 1, c - 1] + band[j + 1, c + 1])
                         + cm * (band[j - 1, c + 1] + band[j + 1, c - 1]))


def _rows_or_nan(frame: Frame, r0: int, r1: int) -> np.ndarray:
    """Rows [r0, r1) of ``frame`` (float32), NaN for rows outside it."""
    from .sampling import read_rows

    out = np.full((r1 - r0, frame.shape[1]), np.nan, np.float32)
    lo, hi = max(r0, 0), min(r1, frame.shape[0])
    if hi > lo:
        out[lo - r0:hi - r0] = read_rows(frame, np.arange(lo, hi))
    return out


def block_means(values: np.ndarray, block: int) -> np.ndarray:
    """Means of the ``block`` x ``block`` blocks of ``values`` (rows a multiple of ``block``;
    columns beyond the last whole block left out), float64, NaN where a block has a NaN;
    1-D, row of blocks by row of blocks."""
    rows, cols = values.shape
    cols = cols // block * block
    blocks = values[:, :cols].reshape(rows // block, block, cols // block, block)
    return blocks.mean(axis=(1, 3), dtype=np.float64).ravel()


def matched_block_samples(ref: Frame, frame: Frame, ref_wcs, wcs, rows: np.ndarray,
                          block: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)``: ``block`` x ``block`` means of the reference (smoothed to match) and of
    ``frame`` resampled onto the reference's pixels, over the reference's ``rows`` (module
    docstring); 1-D, block by block in the same order, NaN where a block is not covered."""
    from .regrid.interp import resample
    from .regrid.pixmap import pixel_map

    cols = ref.shape[1]
    ys, xs = [], []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for run in np.split(np.asarray(rows), breaks):
        r0, r1 = int(run[0]), int(run[-1]) + 1
        mx, my = pixel_map(wcs, ref_wcs, ref.shape, rows=slice(r0, r1))
        sampled = np.full((r1 - r0, cols), np.nan, np.float32)
        inside = np.isfinite(my)
        if inside.any():
            lo = max(0, int(np.floor(my[inside].min())) - 1)
            hi = min(frame.shape[0], int(np.ceil(my[inside].max())) + 2)
            if hi > lo:
                sampled = resample(_rows_or_nan(frame, lo, hi), mx, my - lo, "bilinear")
        # Frame k's smoothing at each reference pixel, carried into the reference's axes
        # through the inverse of the map's Jacobian (median over the run: it varies slowly).
        with np.errstate(invalid="ignore"):
            fx = mx - np.floor(mx)
            fy = my - np.floor(my)
            jac = np.array([[np.nanmedian(np.diff(mx, axis=1)), np.nanmedian(np.diff(mx, axis=0))
                             if mx.shape[0] > 1 else np.nan],
                            [np.nanmedian(np.diff(my, axis=1)), np.nanmedian(np.diff(my, axis=0))
                             if my.shape[0] > 1 else np.nan]])
        if not np.all(np.isfinite(jac)) or abs(np.linalg.det(jac)) < 1e-12:
            ys.append(np.full(((r1 - r0) // block) * (cols // block), np.nan))
            xs.append(block_means(sampled, block))
            continue
        inv = np.linalg.inv(jac)  # frame-k pixel offsets -> reference pixel offsets
        vx = fx * (1.0 - fx)
        vy = fy * (1.0 - fy)
        muu = inv[0, 0] ** 2 * vx + inv[0, 1] ** 2 * vy
        mvv = inv[1, 0] ** 2 * vx + inv[1, 1] ** 2 * vy
        muv = inv[0, 0] * inv[1, 0] * vx + inv[0, 1] * inv[1, 1] * vy
        band = _rows_or_nan(ref, r0 - 1, r1 + 1)
        smoothed = np.empty((r1 - r0, cols), np.float64)
        _smooth_matched(band.astype(np.float64), muu, mvv, muv, smoothed)
        ys.append(block_means(smoothed, block))
        xs.append(block_means(sampled, block))
    return np.concatenate(ys), np.concatenate(xs)
