"""Siril-style rejections of one pixel's sorted values, for the CPU backend's sorted combine.

Each function takes ``col``, a pixel's ``n`` valid values sorted ascending (float64), and returns
the kept contiguous range ``(lo, hi)`` of it (:func:`winsor_lanes`: of every pixel of a sorted
chunk at once), as every rejection of
:func:`skystack.backends.cpu.kernels.combine_sorted` does. The GPU kernels implement the same
definitions in ``kernels/sk_reject.cuh`` in float64 with the column primitives of the GPU; here
range sums are differences of per-pixel prefix sums (O(1) per winsorizing step), which differ
from those only by rounding.

``winsor`` (winsorized sigma clipping, Siril / PixInsight after Huber)
    Each iteration, on the values kept so far: ``med`` their median; ``s`` starts as their
    sample standard deviation and is refined: the values are winsorized (clamped) to
    ``med -+ 1.5 s`` and ``s = 1.134 * std(winsorized)``, repeated until ``s`` changes by at
    most 5e-4 of itself (at most 50 times). Both standard deviations have ddof 1 (with ddof 0
    the estimate shrinks on small stacks: good values of 8 frames were clipped). The values
    outside ``[med - sigma_low * s, med + sigma_high * s]`` are then rejected. Iterations stop
    when none is rejected or after ``maxiters`` (0: until nothing changes).
``linfit`` (linear-fit clipping, Siril / PixInsight)
    Each iteration fits a least-squares line to the kept sorted values against their rank;
    ``s`` is the mean absolute residual. Unlike Siril, which rejects any value whose residual is
    beyond the bounds, values are trimmed from the ends only (the kernels keep a contiguous range
    of the sorted values): the low end advances while its residual is below
    ``-sigma_low * s``, then the high end retreats while its residual is above ``sigma_high * s``.
    A value lying between two kept values is never rejected. Iterations as for ``winsor``.
``pctclip`` (Siril's percentile clipping, one pass)
    With ``med`` the median of the valid values, ``x`` is rejected when
    ``(med - x) / |med| > pctclip_lo`` or ``(x - med) / |med| > pctclip_hi``. A relative distance
    needs a non-zero median: where the median is 0 nothing is rejected (a plain combine of the
    valid values; use sigma clipping for data whose level is near zero, e.g. sky-subtracted).

Both iterative methods never keep fewer than :data:`MIN_KEPT` values: an iteration that would
leave fewer is not applied (Siril's documentation states no minimum; three is the fewest values
for which a spread, or a residual from a line, means anything), and a pixel with fewer valid values
is not clipped at all.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

MIN_KEPT = 3
WINSOR_CUT = 1.5
WINSOR_SCALE = 1.134
WINSOR_TOL = 5e-4
WINSOR_MAX_STEPS = 50


@njit(nogil=True, cache=True, error_model="numpy")
def _median(col, a, b):
    m = b - a
    mid = a + m // 2
    if m % 2 == 1:
        return col[mid]
    return 0.5 * (col[mid - 1] + col[mid])


@njit(nogil=True, cache=True, error_model="numpy")
def _first_not_below(col, a, b, x):
    """First index of [a, b) whose value is >= x (b if none)."""
    while a < b:
        m = (a + b) >> 1
        if col[m] < x:
            a = m + 1
        else:
            b = m
    return a


@njit(nogil=True, cache=True, error_model="numpy")
def _first_above(col, a, b, x):
    """First index of [a, b) whose value is > x (b if none)."""
    while a < b:
        m = (a + b) >> 1
        if col[m] <= x:
            a = m + 1
        else:
            b = m
    return a


@njit(nogil=True, cache=True, error_model="numpy")
def prefix_sums(col, n, pre):
    """Prefix sums of ``d = col - pivot`` (pivot: the median): ``pre[0, i]`` = sum of d,
    ``pre[1, i]`` of d**2, ``pre[2, i]`` of j * d_j, over j < i. Every range sum of the
    iterations below is then a difference; the pivot keeps d small, so that variances from
    these sums lose no precision to cancellation. Returns the pivot."""
    pivot = col[n // 2]
    s = 0.0
    q = 0.0
    r = 0.0
    pre[0, 0] = 0.0
    pre[1, 0] = 0.0
    pre[2, 0] = 0.0
    for j in range(n):
        d = col[j] - pivot
        s += d
        q += d * d
        r += j * d
        pre[0, j + 1] = s
        pre[1, j + 1] = q
        pre[2, j + 1] = r
    return pivot


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _winsor_step(cols, pre, t, a, b, med, pivot, sig, i1s, i2s):
    """One winsorizing step of sigma ``sig[t]`` of lane ``t`` (values ``cols[t]``, prefix sums
    ``pre[t]``) on its sorted range [a, b) (clamp indices ``i1s[t]``, ``i2s[t]``, updated);
    True when sigma has converged. (Whole arrays and indices rather than views of a lane: no
    array is built per step.)"""
    m = b - a
    sigma = sig[t]
    lo = med - WINSOR_CUT * sigma
    hi = med + WINSOR_CUT * sigma
    # Sorted: the values clamped to lo (hi) are the first (last) ones of the range. The
    # bounds move little from step to step: walk the indices from where they were.
    i1 = i1s[t]
    i2 = i2s[t]
    while i1 < b and cols[t, i1] < lo:
        i1 += 1
    while i1 > a and cols[t, i1 - 1] >= lo:
        i1 -= 1
    i2 = max(i2, i1)
    while i2 < b and cols[t, i2] <= hi:
        i2 += 1
    while i2 > i1 and cols[t, i2 - 1] > hi:
        i2 -= 1
    i1s[t] = i1
    i2s[t] = i2
    nlo = float(i1 - a)
    nhi = float(b - i2)
    dlo = lo - pivot
    dhi = hi - pivot
    w = nlo * dlo + (pre[t, 0, i2] - pre[t, 0, i1]) + nhi * dhi
    wq = nlo * dlo * dlo + (pre[t, 1, i2] - pre[t, 1, i1]) + nhi * dhi * dhi
    nxt = WINSOR_SCALE * math.sqrt(max(wq - w * w / m, 0.0) / (m - 1))
    sig[t] = nxt
    return abs(nxt - sigma) <= WINSOR_TOL * sigma


@njit(nogil=True, cache=True, error_model="numpy")
def linfit_range(col, n, sigma_lo, sigma_hi, maxiters, pre):
    """Kept range of linear-fit clipping from the ends (module docstring); ``pre``: scratch of
    shape (3, >= n + 1)."""
    a = 0
    b = n
    it = 0
    if n < MIN_KEPT:
        return a, b
    pivot = prefix_sums(col, n, pre)
    while b - a >= MIN_KEPT:
        m = b - a
        rmean = 0.5 * (m - 1)
        s_all = pre[0, b] - pre[0, a]
        ymean = pivot + s_all / m
        # sum over the range of (rank - rmean) * d, rank = i - a (the pivot cancels out).
        sxy = (pre[2, b] - pre[2, a]) - (a + rmean) * s_all
        sxx = float(m) * (float(m) * float(m) - 1.0) / 12.0
        beta = sxy / sxx
        alpha = ymean - beta * rmean
        sabs = 0.0
        for i in range(a, b):
            sabs += abs(col[i] - (alpha + beta * float(i - a)))
        s = sabs / m
        na = a
        while na < b and col[na] - (alpha + beta * float(na - a)) < -sigma_lo * s:
            na += 1
        nb = b
        while nb > na and col[nb - 1] - (alpha + beta * float(nb - 1 - a)) > sigma_hi * s:
            nb -= 1
        if (na == a and nb == b) or nb - na < MIN_KEPT:
            break
        a = na
        b = nb
        it += 1
        if maxiters >= 0 and it >= maxiters:
            break
    return a, b


@njit(nogil=True, cache=True, error_model="numpy")
def pctclip_range(col, n, pct_lo, pct_hi):
    """Kept range of Siril's percentile clipping; nothing rejected where the median is 0."""
    med = _median(col, 0, n)
    mag = abs(med)
    if mag == 0.0:
        return 0, n
    lo = _first_not_below(col, 0, n, med - pct_lo * mag)
    hi = _first_above(col, lo, n, med + pct_hi * mag)
    return lo, hi


# Lanes winsorized together: their values and prefix sums (about 20 KB at 25 frames) stay in L1.
_GROUP = 32


@njit(nogil=True, cache=True, error_model="numpy")
def winsor_lanes(scratch, nlanes, nvalid, sigma_lo, sigma_hi, maxiters, lo_arr, hi_arr):
    """Kept ranges of winsorized sigma clipping (module docstring; ``maxiters < 0``: until
    nothing changes) of every lane ``q < nlanes`` of a sorted chunk (``scratch[:, q]`` holds
    lane q's ``nvalid[q]`` values sorted, float32), into ``lo_arr`` / ``hi_arr``.

    Groups of lanes advance together: each winsorizing step is applied to every lane of the
    group still converging before the next step, so that the steps of different pixels
    (independent chains of divisions and square roots) overlap in the CPU's pipeline.
    """
    nf = scratch.shape[0]
    cols = np.empty((_GROUP, nf), np.float64)
    pre = np.empty((_GROUP, 3, nf + 1), np.float64)
    med = np.empty(_GROUP, np.float64)
    piv = np.empty(_GROUP, np.float64)
    sig = np.empty(_GROUP, np.float64)
    a_ = np.empty(_GROUP, np.int64)
    b_ = np.empty(_GROUP, np.int64)
    i1s = np.empty(_GROUP, np.int64)
    i2s = np.empty(_GROUP, np.int64)
    act = np.empty(_GROUP, np.int64)
    conv = np.empty(_GROUP, np.int64)
    for q0 in range(0, nlanes, _GROUP):
        g = min(_GROUP, nlanes - q0)
        nact = 0
        for t in range(g):
            n = nvalid[q0 + t]
            a_[t] = 0
            b_[t] = n
            if n < MIN_KEPT:
                continue
            col = cols[t]
            for j in range(n):
                col[j] = scratch[j, q0 + t]
            piv[t] = prefix_sums(col, n, pre[t])
            act[nact] = t
            nact += 1
        it = 0
        while nact > 0:
            # Start of an iteration: median and plain sample sigma of each active lane.
            for k in range(nact):
                t = act[k]
                a = a_[t]
                b = b_[t]
                m = b - a
                med[t] = _median(cols[t], a, b)
                p = pre[t]
                s_all = p[0, b] - p[0, a]
                sig[t] = math.sqrt(max(p[1, b] - p[1, a] - s_all * s_all / m, 0.0) / (m - 1))
                conv[k] = t
                i1s[t] = a
                i2s[t] = b
            nconv = nact
            for _ in range(WINSOR_MAX_STEPS):
                if nconv == 0:
                    break
                keep = 0
                for k in range(nconv):
                    t = conv[k]
                    if not _winsor_step(cols, pre, t, a_[t], b_[t], med[t], piv[t], sig, i1s,
                                        i2s):
                        conv[keep] = t
                        keep += 1
                nconv = keep
            # The iteration's rejection; lanes that stop leave the active list.
            it += 1
            keep = 0
            for k in range(nact):
                t = act[k]
                col = cols[t]
                a = a_[t]
                b = b_[t]
                na = _first_not_below(col, a, b, med[t] - sigma_lo * sig[t])
                nb = _first_above(col, na, b, med[t] + sigma_hi * sig[t])
                if (na == a and nb == b) or nb - na < MIN_KEPT:
                    continue
                a_[t] = na
                b_[t] = nb
                if maxiters >= 0 and it >= maxiters:
                    continue
                act[keep] = t
                keep += 1
            nact = keep
        for t in range(g):
            lo_arr[q0 + t] = a_[t]
            hi_arr[q0 + t] = b_[t]
