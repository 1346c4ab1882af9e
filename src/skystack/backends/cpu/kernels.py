"""Numba kernels of the CPU backend: per-pixel combination along the frame axis.

Conventions shared by every kernel here:

* ``block`` is a ``(n_frames, n_pixels)`` float32 view of one tile (pixels flattened in C order);
  kernels work on the pixel range ``[p0, p1)`` so that threads can split a tile without races.
* A value is *valid* when it is finite after normalisation (``v * scale[k] + zero[k]``) and, for
  range rejection, when the raw value lies in ``[range_lo, range_hi]``. Invalid values are ignored;
  a pixel with no valid value gets NaN in ``out_img`` and ``out_unc`` and 0 in ``out_cnt``.
* Sums, means and variances accumulate in float64.
* Uncertainty is the standard error of the combined value (``scatter``, see
  :mod:`skystack.uncertainty`).

Two strategies:

``accumulate``
    mean / sum / min / max without order statistics: one streaming pass for sums, one for the
    variance, loops over contiguous pixels innermost so that LLVM vectorises them.
``sorted``
    everything that needs order statistics (median, sigma clipping, min/max and percentile
    rejection). Each chunk of pixels is transposed into a scratch ``(n_frames, chunk)`` array with
    invalid values set to ``+inf`` and sorted by a sorting network applied across the chunk, so
    each compare-exchange is a vector min/max over many pixels. After sorting, every rejection
    keeps a contiguous range ``[lo, hi)`` of a pixel's sorted valid values, and every statistic is
    range arithmetic on that column. Sigma clipping iterates on all pixels of a chunk in
    lockstep (per-pixel ranges and bounds, vector loops; see ``_sigclip_lockstep``).

Kernels are compiled with ``cache=True`` (on disk, next to this file or in numba's user cache) and
``nogil=True``; threading is done by the caller, not by ``parallel=True``, so that the on-disk
cache works reliably and a cold command-line run does not recompile.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..kernel_interface import Method, Reject
from .rejections import linfit_range, pctclip_range, winsor_lanes, winsor_scratch
from .rejections_stat import REJ_CCDCLIP, REJ_ESD, REJ_PCLIP, esd_lambda_table, stat_ranges

# The codes of skystack.backends.kernel_interface as plain ints: Numba freezes them into the code.
MEAN, SUM, MEDIAN, MIN, MAX = (int(Method[m]) for m in ("MEAN", "SUM", "MEDIAN", "MIN", "MAX"))
REJ_NONE, REJ_SIGCLIP, REJ_MINMAX, REJ_RANGE, REJ_PERCENTILE = (
    int(Reject[r]) for r in ("NONE", "SIGCLIP", "MINMAX", "RANGE", "PERCENTILE"))
REJ_WINSOR, REJ_LINFIT, REJ_PCTCLIP = (int(Reject[r]) for r in ("WINSOR", "LINFIT", "PCTCLIP"))

MAD_TO_SIGMA = 1.482602218505602
# Asymptotic efficiency of the median for Gaussian data: SE(median) = sqrt(pi/2) * sigma / sqrt(n).
MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2.0)
# Interquartile range of a unit Gaussian: 2 * Phi^-1(0.75).
IQR_TO_SIGMA = 1.3489795003921634

_INF32 = np.float32(np.inf)


@njit(nogil=True, cache=True, inline="always")
def _is_valid(raw, v, use_range, range_lo, range_hi):
    # v - v is 0 for finite v and NaN for NaN or inf: a branch-free test that vectorises.
    finite = (v - v) == 0
    if use_range:
        return finite and raw >= range_lo and raw <= range_hi
    return finite


@njit(nogil=True, cache=True)
def _store_result(value, unc, count, q, out_img, out_unc, out_cnt):
    if count == 0:
        out_img[q] = np.nan
        out_unc[q] = np.nan
    else:
        out_img[q] = value
        out_unc[q] = unc
    out_cnt[q] = count


@njit(nogil=True, cache=True)
def _moments_to_result(method, n, v1, v2, swx, ssd, vmin, vmax):
    """Combined value and its standard error from weighted moments.

    v1 = sum w, v2 = sum w^2, swx = sum w x, ssd = sum w (x - mean)^2.
    The reliability-weighted sample variance s^2 = ssd / (v1 - v2 / v1) reduces to the usual
    ddof=1 variance for equal weights; SE(mean) = s sqrt(v2) / v1 reduces to s / sqrt(n).
    """
    mean = swx / v1
    if n > 1:
        s = math.sqrt(ssd / (v1 - v2 / v1)) if v1 * v1 > v2 else 0.0
    else:
        s = np.nan
    if method == MEAN:
        return mean, s * math.sqrt(v2) / v1
    if method == SUM:
        return swx, s * math.sqrt(v2)
    if method == MIN:
        return vmin, s
    return vmax, s


# --------------------------------------------------------------------------------------------
# accumulate: mean / sum / min / max, no order statistics
# --------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def combine_accumulate(block, p0, p1, scale, zero, weights, params, chunk, out_img, out_unc,
                       out_cnt):
    """Mean, sum, min or max of the valid values of pixels ``[p0, p1)``; see module docstring.

    ``params`` is a :data:`~skystack.backends.kernel_interface.PARAMS_DTYPE` record.
    """
    # The record's fields are read once, into locals that the loops keep in registers; integers
    # widened to int64, so that the helpers are specialised (and vectorised) as for Python ints.
    method = np.int64(params.method)
    use_range = params.use_range != 0
    range_lo = params.range_lo
    range_hi = params.range_hi
    nf = block.shape[0]
    v1 = np.empty(chunk, np.float64)
    v2 = np.empty(chunk, np.float64)
    swx = np.empty(chunk, np.float64)
    ssd = np.empty(chunk, np.float64)
    vmin = np.empty(chunk, np.float32)
    vmax = np.empty(chunk, np.float32)
    cnt = np.empty(chunk, np.int32)
    for c0 in range(p0, p1, chunk):
        b = min(chunk, p1 - c0)
        for q in range(b):
            v1[q] = 0.0
            v2[q] = 0.0
            swx[q] = 0.0
            ssd[q] = 0.0
            vmin[q] = _INF32
            vmax[q] = -_INF32
            cnt[q] = 0
        # Branch-free accumulation (invalid values weigh 0) so that the pixel loops vectorise.
        for k in range(nf):
            w = weights[k]
            sc = scale[k]
            z = zero[k]
            src = block[k, c0:c0 + b]
            for q in range(b):
                raw = src[q]
                v = raw * sc + z
                ok = _is_valid(raw, v, use_range, range_lo, range_hi)
                wk = w if ok else 0.0
                x = np.float64(v) if ok else 0.0
                v1[q] += wk
                v2[q] += wk * wk
                swx[q] += wk * x
                cnt[q] += np.int32(ok)
                vmin[q] = min(vmin[q], v) if ok else vmin[q]
                vmax[q] = max(vmax[q], v) if ok else vmax[q]
        # Second pass for the variance: two passes are exact where one-pass float sums are not.
        for q in range(b):
            swx[q] = swx[q] / v1[q] if v1[q] > 0.0 else 0.0
        for k in range(nf):
            w = weights[k]
            sc = scale[k]
            z = zero[k]
            src = block[k, c0:c0 + b]
            for q in range(b):
                raw = src[q]
                v = raw * sc + z
                ok = _is_valid(raw, v, use_range, range_lo, range_hi)
                d = (np.float64(v) - swx[q]) if ok else 0.0
                ssd[q] += w * d * d
        for q in range(b):
            n = cnt[q]
            if n == 0:
                _store_result(0.0, 0.0, 0, c0 + q, out_img, out_unc, out_cnt)
                continue
            value, unc = _moments_to_result(method, n, v1[q], v2[q], swx[q] * v1[q], ssd[q],
                                            vmin[q], vmax[q])
            _store_result(value, unc, n, c0 + q, out_img, out_unc, out_cnt)


# --------------------------------------------------------------------------------------------
# sorted: order statistics and rejection on ranges of sorted values
# --------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def _median_of_range(col, lo, hi):
    m = hi - lo
    mid = lo + m // 2
    if m % 2 == 1:
        return col[mid]
    return 0.5 * (col[mid - 1] + col[mid])


@njit(nogil=True, cache=True)
def _percentile_of_range(col, lo, hi, frac):
    """Percentile ``frac`` (0..1) of the sorted range, numpy's default linear interpolation."""
    pos = frac * (hi - lo - 1)
    i = int(math.floor(pos))
    t = pos - i
    if i + 1 >= hi - lo:
        return col[lo + i]
    return col[lo + i] + t * (col[lo + i + 1] - col[lo + i])


# The lockstep kernels use error_model="numpy": a division by zero gives inf/NaN (always guarded
# by a select) instead of Python's exception, whose per-division check stops vectorisation.

# Sums over a pixel's values may be reassociated (several accumulators, SIMD): a serial float64
# chain of additions is latency-bound, and the order of summation is not part of any contract.
# Only 'reassoc' is enabled: no FMA contraction, no assumptions about NaN or inf.
_REASSOC = {"reassoc"}


@njit(nogil=True, cache=True, fastmath=_REASSOC)
def _mean_of_range(col, lo, hi):
    s = 0.0
    for i in range(lo, hi):
        s += col[i]
    return s / (hi - lo)


@njit(nogil=True, cache=True, fastmath=_REASSOC)
def _ssd_of_range(col, lo, hi, mean):
    """Sum of squared deviations from ``mean`` over [lo, hi)."""
    s = 0.0
    for i in range(lo, hi):
        d = col[i] - mean
        s += d * d
    return s


@njit(nogil=True, cache=True, inline="always")
def _winsorized_se_of_mean(n, lo, hi, mean, ssd, xlo, xhi):
    """Tukey-McLaughlin standard error of the mean of the sorted range [lo, hi) of ``n`` sorted
    valid values: ``s_w sqrt(n) / h`` with h = hi - lo and s_w the ddof=1 standard deviation of
    the winsorized sample (values below the range set to xlo = x[lo], above it to xhi = x[hi-1]).
    The kept values' own scatter over sqrt(h) ignores that the trim points move with the data,
    and is 2x too small for an interquartile mean of Gaussian data. From the kept range's
    ``mean`` and ``ssd`` (sum of squared deviations) by the parallel-axis theorem: O(1), no
    further pass. s / sqrt(n) when nothing is trimmed; NaN when fewer than two values are kept.
    """
    h = hi - lo
    if h < 2:
        return np.nan
    nlo = np.float64(lo)
    nhi = np.float64(n - hi)
    hf = np.float64(h)
    nf = np.float64(n)
    mean_w = (hf * mean + nlo * xlo + nhi * xhi) / nf
    d = mean - mean_w
    dlo = xlo - mean_w
    dhi = xhi - mean_w
    ssd_w = ssd + hf * d * d + nlo * dlo * dlo + nhi * dhi * dhi
    return math.sqrt(ssd_w / (nf - 1.0)) * math.sqrt(nf) / hf


@njit(nogil=True, cache=True)
def _reduce_sorted_range(method, col, n, lo, hi):
    """Combined value and standard error of the unweighted sorted range [lo, hi) of the ``n``
    sorted valid values in ``col``; mean and sum take the winsorized standard error."""
    m = hi - lo
    if method == MEDIAN:
        med = _median_of_range(col, lo, hi)
        if m < 2:
            return med, np.nan
        # sigma from the interquartile range: as robust as the MAD, and O(1) on sorted values.
        iqr = _percentile_of_range(col, lo, hi, 0.75) - _percentile_of_range(col, lo, hi, 0.25)
        return med, MEDIAN_SE_FACTOR * (iqr / IQR_TO_SIGMA) / math.sqrt(m)
    mean = _mean_of_range(col, lo, hi)
    ssd = _ssd_of_range(col, lo, hi, mean)
    if method == MEAN or method == SUM:
        se = _winsorized_se_of_mean(n, lo, hi, mean, ssd, col[lo], col[hi - 1])
        return (mean, se) if method == MEAN else (mean * m, se * m)
    return _moments_to_result(method, m, float(m), float(m), mean * m, ssd, col[lo],
                              col[hi - 1])


@njit(nogil=True, cache=True)
def _reduce_weighted(method, block, pix, scale, zero, weights, use_range, range_lo, range_hi,
                     col, n, lo, hi):
    """Weighted mean or sum of the values kept in the sorted range [lo, hi) of the ``n`` sorted
    valid values in ``col``. Its standard error is the weighted one times the unweighted
    winsorized / naive ratio (see :func:`_winsorized_se_of_mean`); where the kept values are all
    equal (naive SE 0), the unweighted winsorized SE (times the sum of weights for the sum).

    Weights belong to frames, and sorting lost the frame of each value, so the kept values are
    found again in frame order by value: strictly inside (col[lo], col[hi-1]) always, and equal to
    an end only as many times as that value occurs inside the range (ties at a rank cut).
    """
    vlo = col[lo]
    vhi = col[hi - 1]
    need_lo = 0
    for i in range(lo, hi):
        if col[i] == vlo:
            need_lo += 1
    need_hi = 0
    if vhi != vlo:
        for i in range(lo, hi):
            if col[i] == vhi:
                need_hi += 1
    nf = block.shape[0]
    kept = np.zeros(nf, np.bool_)
    v1 = 0.0
    v2 = 0.0
    swx = 0.0
    for k in range(nf):
        raw = block[k, pix]
        v = raw * scale[k] + zero[k]
        if not _is_valid(raw, v, use_range, range_lo, range_hi):
            continue
        x = np.float64(v)
        take = False
        if x > vlo and x < vhi:
            take = True
        elif x == vlo and need_lo > 0:
            need_lo -= 1
            take = True
        elif x == vhi and need_hi > 0:
            need_hi -= 1
            take = True
        if take:
            kept[k] = True
            w = weights[k]
            v1 += w
            v2 += w * w
            swx += w * x
    mean = swx / v1
    ssd = 0.0
    for k in range(nf):
        if kept[k]:
            d = np.float64(block[k, pix] * scale[k] + zero[k]) - mean
            ssd += weights[k] * d * d
    value, unc = _moments_to_result(method, hi - lo, v1, v2, swx, ssd, vlo, vhi)
    if hi - lo < n and hi - lo > 1:
        h = hi - lo
        m_h = _mean_of_range(col, lo, hi)
        ssd_h = _ssd_of_range(col, lo, hi, m_h)
        se_w = _winsorized_se_of_mean(n, lo, hi, m_h, ssd_h, vlo, vhi)
        se_naive = math.sqrt(ssd_h / (h - 1)) / math.sqrt(h)
        if se_naive > 0.0:
            unc = unc * (se_w / se_naive)
        else:
            unc = se_w if method == MEAN else se_w * v1
    return value, unc


@njit(nogil=True, cache=True)
def _sort_chunk(pairs, scratch, b):
    # Each step is a min/max over b contiguous lanes: vectorised, branch-free.
    for s in range(pairs.shape[0]):
        i = pairs[s, 0]
        j = pairs[s, 1]
        ri = scratch[i]
        rj = scratch[j]
        for q in range(b):
            x = ri[q]
            y = rj[q]
            ri[q] = min(x, y)
            rj[q] = max(x, y)


@njit(nogil=True, cache=True)
def _median_all_valid(scratch, b, c0, nf, out_img, out_unc, out_cnt):
    """Median and its standard error for sorted columns of ``nf`` valid values (see caller)."""
    mid = nf // 2
    even = nf % 2 == 0
    pos1 = 0.25 * (nf - 1)
    i1 = int(math.floor(pos1))
    t1 = pos1 - i1
    pos3 = 0.75 * (nf - 1)
    i3 = int(math.floor(pos3))
    t3 = pos3 - i3
    j1 = min(i1 + 1, nf - 1)
    j3 = min(i3 + 1, nf - 1)
    se = MEDIAN_SE_FACTOR / IQR_TO_SIGMA / math.sqrt(nf) if nf >= 2 else np.nan
    r_mid = scratch[mid]
    r_lo = scratch[mid - 1] if even else scratch[mid]
    a1 = scratch[i1]
    b1 = scratch[j1]
    a3 = scratch[i3]
    b3 = scratch[j3]
    for q in range(b):
        med = 0.5 * (np.float64(r_lo[q]) + np.float64(r_mid[q]))
        x1 = np.float64(a1[q])
        x3 = np.float64(a3[q])
        q1 = x1 + t1 * (np.float64(b1[q]) - x1)
        q3 = x3 + t3 * (np.float64(b3[q]) - x3)
        out_img[c0 + q] = med
        out_unc[c0 + q] = (q3 - q1) * se
        out_cnt[c0 + q] = nf


@njit(nogil=True, cache=True, fastmath=_REASSOC, error_model="numpy")
def _range_mean_ssd(scratch, b, lo, hi, mean, ssd):
    """Mean and sum of squared deviations of each lane's sorted range ``[lo[q], hi[q])``
    (two passes: exact where one-pass sums are not), in vector loops over rows and lanes."""
    nf = scratch.shape[0]
    for q in range(b):
        mean[q] = 0.0
        ssd[q] = 0.0
    for k in range(nf):
        row = scratch[k]
        for q in range(b):
            inside = (k >= lo[q]) & (k < hi[q])
            mean[q] += np.float64(row[q]) if inside else 0.0
    for q in range(b):
        mean[q] = mean[q] / np.float64(max(hi[q] - lo[q], 1))
    for k in range(nf):
        row = scratch[k]
        for q in range(b):
            inside = (k >= lo[q]) & (k < hi[q])
            d = (np.float64(row[q]) - mean[q]) if inside else 0.0
            ssd[q] += d * d


@njit(nogil=True, cache=True, error_model="numpy")
def _clip_iteration(scratch, b, nvalid, lo, hi, lower, upper, active, it, maxiters, pairs,
                    use_median, use_mad, sigma_lo, sigma_hi, dev, cen, spread):
    """One sigma-clipping iteration of the active lanes ``q < b`` of ``scratch``, in lockstep.

    Lane ``q`` keeps the sorted range ``[lo[q], hi[q])`` within ``(lower[q], upper[q])``; the
    median is a gather at the range's middle, the MAD the same gather in the deviations
    ``|x - median|`` (+inf outside the range) sorted by the sorting network, and the counts of
    values beyond the new bounds give the next range. ``it`` is the iteration's number (from 1).
    Lanes that stop (nothing rejected, nothing left, or ``maxiters`` reached) get
    ``active[q] = 0`` and keep the bounds of this iteration. Returns the lanes still active.
    """
    nf = scratch.shape[0]
    need_mean = (not use_median) or (not use_mad)
    if use_median or use_mad:
        # (m >> 1 rather than m // 2: the range is never negative, and Python's floor division
        # of signed integers costs a correction that stops vectorisation.)
        for q in range(b):
            m = max(hi[q] - lo[q], 1)
            i1 = min(lo[q] + ((m - 1) >> 1), nf - 1)
            i2 = min(lo[q] + (m >> 1), nf - 1)
            cen[q] = 0.5 * (np.float64(scratch[i1, q]) + np.float64(scratch[i2, q]))
    if use_mad:
        for k in range(nf):
            row = scratch[k]
            drow = dev[k]
            for q in range(b):
                inside = (k >= lo[q]) & (k < hi[q])
                d = abs(np.float64(row[q]) - cen[q])
                drow[q] = d if inside else np.inf
        _sort_chunk(pairs, dev, b)
        for q in range(b):
            m = max(hi[q] - lo[q], 1)
            spread[q] = 0.5 * (dev[(m - 1) >> 1, q] + dev[m >> 1, q]) * MAD_TO_SIGMA
    if need_mean:
        # dev[0] and dev[1] are free here (the MAD is read): the mean, then the ssd.
        mean = dev[0]
        ssd = dev[1]
        _range_mean_ssd(scratch, b, lo, hi, mean, ssd)
        for q in range(b):
            if not use_median:
                cen[q] = mean[q]
            if not use_mad:
                spread[q] = math.sqrt(ssd[q] / max(hi[q] - lo[q], 1))
    for q in range(b):
        on = active[q] != 0
        lower[q] = (cen[q] - sigma_lo * spread[q]) if on else lower[q]
        upper[q] = (cen[q] + sigma_hi * spread[q]) if on else upper[q]
    # cen / spread now count the values below / above the new bounds inside the range.
    for q in range(b):
        cen[q] = 0.0
        spread[q] = 0.0
    for k in range(nf):
        row = scratch[k]
        for q in range(b):
            inside = (k >= lo[q]) & (k < hi[q])
            x = np.float64(row[q])
            cen[q] += 1.0 if (inside & (x < lower[q])) else 0.0
            spread[q] += 1.0 if (inside & (x > upper[q])) else 0.0
    last = maxiters >= 0 and it >= maxiters
    n_active = 0
    for q in range(b):  # branch-free, so that it vectorises
        m = hi[q] - lo[q]
        na = lo[q] + np.int32(cen[q])
        nb = hi[q] - np.int32(spread[q])
        go = (active[q] != 0) & (nb - na != m) & (nb > na) & (not last)
        lo[q] = na if go else lo[q]
        hi[q] = nb if go else hi[q]
        active[q] = np.uint8(go)
        n_active += np.int32(go)
    return n_active


@njit(nogil=True, cache=True)
def _sigclip_lockstep(scratch, b, nvalid, pairs, use_median, use_mad, sigma_lo, sigma_hi,
                      maxiters, dev, cen, spread, lower, upper, lo, hi, active, work):
    """astropy's ``sigma_clip`` of every lane of a sorted chunk: the kept ranges ``[lo, hi)``.

    Lane ``q`` holds its ``nvalid[q]`` valid values sorted at the top of ``scratch[:, q]``
    (+inf below). The first iteration runs on all lanes at once; the lanes still clipping
    after it (typically a few tens of per cent) are gathered into the compact scratch of
    ``work`` before each further iteration, so that each costs in proportion to the lanes it
    serves. This replaces a per-pixel scalar loop full of unpredictable branches (bisections,
    scans), which dominated sigma-clipped combines (about 2x faster on 10 frames). Centre,
    spread and bounds are computed in float64. At the end ``[lo, hi)`` is every value within a
    lane's last bounds, inclusive (astropy's rule); a lane with no valid value gets an empty
    range.
    """
    csc, cvalid, clo, chi, clower, cupper, cact, idx = work
    nf = scratch.shape[0]
    for q in range(b):
        lo[q] = 0
        hi[q] = nvalid[q]
        active[q] = np.uint8(nvalid[q] > 0)
        lower[q] = -np.inf
        upper[q] = np.inf
    it = 1
    n_active = _clip_iteration(scratch, b, nvalid, lo, hi, lower, upper, active, it, maxiters,
                               pairs, use_median, use_mad, sigma_lo, sigma_hi, dev, cen, spread)
    while n_active > 0:
        j = 0
        for q in range(b):
            if active[q]:
                idx[j] = q
                j += 1
        for k in range(nf):
            src = scratch[k]
            dst = csc[k]
            for t in range(j):
                dst[t] = src[idx[t]]
        for t in range(j):
            q = idx[t]
            cvalid[t] = nvalid[q]
            clo[t] = lo[q]
            chi[t] = hi[q]
            clower[t] = lower[q]
            cupper[t] = upper[q]
            cact[t] = 1
        it += 1
        n_active = _clip_iteration(csc, j, cvalid, clo, chi, clower, cupper, cact, it, maxiters,
                                   pairs, use_median, use_mad, sigma_lo, sigma_hi, dev, cen,
                                   spread)
        for t in range(j):
            q = idx[t]
            lo[q] = clo[t]
            hi[q] = chi[t]
            lower[q] = clower[t]
            upper[q] = cupper[t]
            active[q] = cact[t]
    # Final ranges: everything within each lane's last bounds.
    for q in range(b):
        cen[q] = 0.0
        spread[q] = 0.0
    for k in range(nf):
        row = scratch[k]
        for q in range(b):
            valid = k < nvalid[q]
            x = np.float64(row[q])
            cen[q] += 1.0 if (valid & (x < lower[q])) else 0.0
            spread[q] += 1.0 if (valid & (x > upper[q])) else 0.0
    for q in range(b):
        lo[q] = np.int32(cen[q])
        hi[q] = max(lo[q], nvalid[q] - np.int32(spread[q]))


@njit(nogil=True, cache=True, fastmath=_REASSOC, error_model="numpy")
def _finish_ranges(method, scratch, b, c0, nvalid, lo, hi, sums, ssd, out_img, out_unc,
                   out_cnt):
    """Unweighted mean / sum / min / max of each lane's sorted range ``[lo[q], hi[q])`` of its
    ``nvalid[q]`` valid values and its standard error (as :func:`_reduce_sorted_range`: the
    winsorized one for mean and sum), with loops over rows and lanes that LLVM vectorises:
    divisions and square roots then cost a vector instruction per few lanes instead of a scalar
    one per pixel, which dominated."""
    nf = scratch.shape[0]
    _range_mean_ssd(scratch, b, lo, hi, sums, ssd)  # sums: the mean
    for q in range(b):
        m = hi[q] - lo[q]
        mf = np.float64(m)
        s = math.sqrt(ssd[q] / (mf - 1.0)) if m > 1 else np.nan
        xlo = np.float64(scratch[min(lo[q], nf - 1), q])
        xhi = np.float64(scratch[max(hi[q] - 1, 0), q])
        se_w = _winsorized_se_of_mean(nvalid[q], lo[q], hi[q], sums[q], ssd[q], xlo, xhi)
        if method == MEAN:
            value = sums[q]
            unc = se_w
        elif method == SUM:
            value = sums[q] * mf
            unc = se_w * mf
        elif method == MIN:
            value = np.float64(scratch[min(lo[q], nf - 1), q])
            unc = s
        else:
            value = np.float64(scratch[max(hi[q] - 1, 0), q])
            unc = s
        empty = m <= 0
        out_img[c0 + q] = np.nan if empty else value
        out_unc[c0 + q] = np.nan if empty else unc
        out_cnt[c0 + q] = 0 if empty else m


@njit(nogil=True, cache=True)
def combine_sorted(block, p0, p1, pairs, scale, zero, weights, params, chunk, out_img, out_unc,
                   out_cnt):
    """Combine pixels ``[p0, p1)`` with order statistics; see module docstring.

    ``pairs`` is the sorting network for ``block.shape[0]`` values (:mod:`skystack.networks`);
    ``params`` is a :data:`~skystack.backends.kernel_interface.PARAMS_DTYPE` record, whose
    ``weighted`` selects the weighted reduction (mean and sum only).
    """
    # The record's fields are read once, into locals that the loops keep in registers; integers
    # widened to int64, so that the helpers are specialised (and vectorised) as for Python ints.
    weighted = params.weighted != 0
    method = np.int64(params.method)
    reject = np.int64(params.reject)
    use_range = params.use_range != 0
    range_lo = params.range_lo
    range_hi = params.range_hi
    use_median = params.use_median != 0
    use_mad = params.use_mad != 0
    sigma_lo = params.sigma_lo
    sigma_hi = params.sigma_hi
    maxiters = np.int64(params.maxiters)
    nlow = np.int64(params.nlow)
    nhigh = np.int64(params.nhigh)
    plow = params.plow
    phigh = params.phigh
    pct_lo = params.pctclip_lo
    pct_hi = params.pctclip_hi
    nf = block.shape[0]
    scratch = np.empty((nf, chunk), np.float32)
    nvalid = np.empty(chunk, np.int32)
    col = np.empty(nf, np.float64)
    pre = np.empty((3, nf + 1), np.float64)  # prefix sums of linfit (rejections.py)
    winsor = reject == REJ_WINSOR  # all lanes of a chunk together (rejections.winsor_lanes)
    winsor_work = winsor_scratch(nf, chunk if winsor else 1)
    # Sigma clipping iterates on all lanes of a chunk in lockstep (see _sigclip_lockstep).
    sigclip = reject == REJ_SIGCLIP
    dev = np.empty((max(nf, 2) if sigclip else 1, chunk), np.float64)
    cen = np.empty(chunk, np.float64)
    spread = np.empty(chunk, np.float64)
    lower = np.empty(chunk, np.float64)
    upper = np.empty(chunk, np.float64)
    lo_arr = np.zeros(chunk, np.int32)
    hi_arr = np.zeros(chunk, np.int32)
    active = np.zeros(chunk, np.uint8)
    work = (np.empty((nf, chunk), np.float32), np.empty(chunk, np.int32),
            np.empty(chunk, np.int32), np.empty(chunk, np.int32), np.empty(chunk, np.float64),
            np.empty(chunk, np.float64), np.empty(chunk, np.uint8), np.empty(chunk, np.int32))
    # esd, ccdclip and pclip: per-lane ranges (rejections_stat), finished like sigclip's.
    stat = reject == REJ_ESD or reject == REJ_CCDCLIP or reject == REJ_PCLIP
    lam = esd_lambda_table(nf if reject == REJ_ESD else 2, params.esd_alpha)
    linfit = reject == REJ_LINFIT
    vector_finish = (sigclip or winsor or stat or linfit) and not weighted and method != MEDIAN
    for c0 in range(p0, p1, chunk):
        b = min(chunk, p1 - c0)
        for q in range(b):
            nvalid[q] = 0
        for k in range(nf):
            sc = scale[k]
            z = zero[k]
            row = scratch[k]
            src = block[k, c0:c0 + b]
            for q in range(b):
                raw = src[q]
                v = raw * sc + z
                ok = _is_valid(raw, v, use_range, range_lo, range_hi)
                row[q] = v if ok else _INF32
                nvalid[q] += np.int32(ok)
        _sort_chunk(pairs, scratch, b)
        fast_median = method == MEDIAN and reject == REJ_NONE
        if fast_median:
            # Pixels whose values are all valid have the median and quartiles at the same rows:
            # finish them with vector loops across the chunk; the others take the scalar path.
            _median_all_valid(scratch, b, c0, nf, out_img, out_unc, out_cnt)
        if winsor:
            winsor_lanes(scratch, b, nvalid, sigma_lo, sigma_hi, maxiters, lo_arr, hi_arr,
                         winsor_work)
            if vector_finish:
                _finish_ranges(method, scratch, b, c0, nvalid, lo_arr, hi_arr, cen, spread,
                               out_img, out_unc, out_cnt)
                continue
        if sigclip:
            _sigclip_lockstep(scratch, b, nvalid, pairs, use_median, use_mad, sigma_lo,
                              sigma_hi, maxiters, dev, cen, spread, lower, upper, lo_arr,
                              hi_arr, active, work)
            if vector_finish:
                _finish_ranges(method, scratch, b, c0, nvalid, lo_arr, hi_arr, cen, spread,
                               out_img, out_unc, out_cnt)
                continue  # every lane done
        if stat:
            stat_ranges(reject, scratch, b, nvalid, col, use_median, sigma_lo, sigma_hi,
                        params.esd_max_frac, lam, params.gain, params.rdnoise, params.snoise,
                        np.float64(scale[0]), np.float64(zero[0]), params.pclip, lo_arr, hi_arr)
            if vector_finish:
                _finish_ranges(method, scratch, b, c0, nvalid, lo_arr, hi_arr, cen, spread,
                               out_img, out_unc, out_cnt)
                continue
        if linfit and vector_finish:
            # Per-pixel ranges (rejections.linfit_range), then the vector finish of sigclip.
            for q in range(b):
                for i in range(nvalid[q]):
                    col[i] = scratch[i, q]
                lo_arr[q], hi_arr[q] = linfit_range(col, nvalid[q], sigma_lo, sigma_hi,
                                                    maxiters, pre)
            _finish_ranges(method, scratch, b, c0, nvalid, lo_arr, hi_arr, cen, spread, out_img,
                           out_unc, out_cnt)
            continue
        for q in range(b):
            n = nvalid[q]
            pix = c0 + q
            if fast_median and n == nf:
                continue
            if n == 0:
                _store_result(0.0, 0.0, 0, pix, out_img, out_unc, out_cnt)
                continue
            for i in range(n):
                col[i] = scratch[i, q]
            lo = 0
            hi = n
            if sigclip or winsor or stat:
                lo = lo_arr[q]
                hi = hi_arr[q]
            elif reject == REJ_MINMAX:
                lo = nlow
                hi = n - nhigh
            elif reject == REJ_PERCENTILE:
                lo = int(math.floor(n * plow / 100.0))
                hi = n - int(math.floor(n * phigh / 100.0))
            elif reject == REJ_LINFIT:
                lo, hi = linfit_range(col, n, sigma_lo, sigma_hi, maxiters, pre)
            elif reject == REJ_PCTCLIP:
                lo, hi = pctclip_range(col, n, pct_lo, pct_hi)
            if hi <= lo:
                _store_result(0.0, 0.0, 0, pix, out_img, out_unc, out_cnt)
                continue
            if weighted:
                value, unc = _reduce_weighted(method, block, pix, scale, zero, weights,
                                              use_range, range_lo, range_hi, col, n, lo, hi)
            else:
                value, unc = _reduce_sorted_range(method, col, n, lo, hi)
            _store_result(value, unc, hi - lo, pix, out_img, out_unc, out_cnt)
