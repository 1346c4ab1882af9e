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


# Lanes winsorized together: their values and prefix sums (3 x (nf + 1) x group float64, in L2;
# large groups, as the steps of few lanes left stepping cost as much as of many).
_GROUP_BYTES = 524288


@njit(nogil=True, cache=True, error_model="numpy")
def _clamp_indices_all(xs, pre1, pre2, g, a_, b_, lo, hi, i1, i2, bl1, bu1, bl2, bu2, sum1, sum2,
                       nlo, nhi):
    """The clamp indices of :func:`_winsor_refine` of lanes ``j < g`` (slot j is lane j) for the
    bounds ``lo`` / ``hi``, from counts of the range's values below / not above them (sorted:
    ``i1`` is the first value >= lo, ``i2`` the first > hi), and what the steps need of them."""
    nf = xs.shape[0]
    for j in range(g):
        i1[j] = 0
        i2[j] = 0
    for k in range(nf):
        row = xs[k]
        for j in range(g):
            inside = (k >= a_[j]) & (k < b_[j])
            x = row[j]
            i1[j] += np.int64(inside & (x < lo[j]))
            i2[j] += np.int64(inside & (x <= hi[j]))
    for j in range(g):
        a = a_[j]
        b = b_[j]
        k1 = a + i1[j]
        k2 = a + i2[j]
        i1[j] = k1
        i2[j] = k2
        bl1[j] = xs[k1 - 1, j] if k1 > a else -np.inf
        bu1[j] = xs[k1, j] if k1 < b else np.inf
        bl2[j] = xs[k2 - 1, j] if k2 > a else -np.inf
        bu2[j] = xs[k2, j] if k2 < b else np.inf
        nlo[j] = np.float64(k1 - a)
        nhi[j] = np.float64(b - k2)
        sum1[j] = pre1[k2, j] - pre1[k1, j]
        sum2[j] = pre2[k2, j] - pre2[k1, j]


@njit(nogil=True, cache=True, error_model="numpy")
def _winsor_refine(xs, pre1, pre2, g, a_, b_, med, cnt, sig, fw, iw):
    """Refine sigma by winsorizing (module docstring) for lanes ``0 <= j < g`` in lockstep.

    Column ``j`` of ``xs`` holds lane j's sorted values (float64), of which the range
    ``[a_[j], b_[j])`` (``cnt[j]`` values, median ``med[j]``) is winsorized; ``pre1[i, j]`` /
    ``pre2[i, j]`` are the sums of ``d = x - med`` / ``d**2`` over the range's rows below ``i``.
    ``sig[j]``: the starting sigma, replaced by the refined one. ``fw`` (13 x >= g float64) and
    ``iw`` (5 x >= g int64): scratch.

    The values clamped to ``med -+ 1.5 s`` are the first and last ones of the range, so that a
    step needs only the two clamp indices and two prefix-sum differences. Each step checks,
    in a loop that vectorises across lanes, whether the new clamp bounds still fall between
    the same neighbouring values as before (typically they do: s moves little); only the lanes
    where they do not move their indices (scalar walks, as the bounds move little), and then
    the new sigma of every lane is computed in a second vector loop. Lanes that have converged
    leave the lockstep once they are half of those stepping.
    """
    slot, i1, i2, fix = iw[0], iw[1], iw[2], iw[3]  # slot: the lane of each stepping slot
    cm, m, s, lo, hi = fw[0], fw[1], fw[2], fw[3], fw[4]
    # Values either side of each clamp bound: x[i1 - 1] < lo <= x[i1], x[i2 - 1] <= hi < x[i2].
    bl1, bu1, bl2, bu2 = fw[5], fw[6], fw[7], fw[8]
    sum1, sum2 = fw[9], fw[10]  # sums of d, d**2 over the unclamped values [i1, i2)
    nlo, nhi = fw[11], fw[12]
    going = iw[4]
    for j in range(g):
        slot[j] = j
        cm[j] = med[j]
        m[j] = cnt[j]
        s[j] = sig[j]
        i1[j] = a_[j]
        i2[j] = b_[j]
        bl1[j] = np.inf  # no bounds known yet: every lane finds its indices at the first step
        bu1[j] = -np.inf
        bl2[j] = np.inf
        bu2[j] = -np.inf
        going[j] = 1
    dense = True  # slot j is lane j (no lane has left yet)
    for _ in range(WINSOR_MAX_STEPS):
        if g == 0:
            break
        nfix = 0
        for j in range(g):
            lo[j] = cm[j] - WINSOR_CUT * s[j]
            hi[j] = cm[j] + WINSOR_CUT * s[j]
            same = (bl1[j] < lo[j]) & (bu1[j] >= lo[j]) & (bl2[j] <= hi[j]) & (bu2[j] > hi[j])
            fix[nfix] = j
            nfix += np.int64((not same) & (going[j] != 0))
        if dense and 4 * nfix > g:
            # Many lanes to fix (the first steps): count the values below / above the bounds
            # for all lanes at once instead, in a pass over rows that vectorises.
            _clamp_indices_all(xs, pre1, pre2, g, a_, b_, lo, hi, i1, i2, bl1, bu1, bl2, bu2,
                               sum1, sum2, nlo, nhi)
            nfix = 0
        for f in range(nfix):
            j = fix[f]
            c = slot[j]
            a = a_[c]
            b = b_[c]
            k1 = i1[j]
            k2 = i2[j]
            while k1 < b and xs[k1, c] < lo[j]:
                k1 += 1
            while k1 > a and xs[k1 - 1, c] >= lo[j]:
                k1 -= 1
            k2 = max(k2, k1)
            while k2 < b and xs[k2, c] <= hi[j]:
                k2 += 1
            while k2 > k1 and xs[k2 - 1, c] > hi[j]:
                k2 -= 1
            i1[j] = k1
            i2[j] = k2
            bl1[j] = xs[k1 - 1, c] if k1 > a else -np.inf
            bu1[j] = xs[k1, c] if k1 < b else np.inf
            bl2[j] = xs[k2 - 1, c] if k2 > a else -np.inf
            bu2[j] = xs[k2, c] if k2 < b else np.inf
            nlo[j] = np.float64(k1 - a)
            nhi[j] = np.float64(b - k2)
            sum1[j] = pre1[k2, c] - pre1[k1, c]
            sum2[j] = pre2[k2, c] - pre2[k1, c]
        nact = 0
        for j in range(g):  # branch-free, so that it vectorises; converged lanes keep their s
            dlo = lo[j] - cm[j]
            dhi = hi[j] - cm[j]
            w = nlo[j] * dlo + sum1[j] + nhi[j] * dhi
            wq = nlo[j] * dlo * dlo + sum2[j] + nhi[j] * dhi * dhi
            mm = m[j]
            nxt = WINSOR_SCALE * math.sqrt(max(wq - w * w / mm, 0.0) / (mm - 1.0))
            was = going[j] != 0
            on = was & (abs(nxt - s[j]) > WINSOR_TOL * s[j])
            s[j] = nxt if was else s[j]
            going[j] = np.uint8(on)
            nact += np.int64(on)
        if 2 * nact > g:
            continue
        # The converged lanes' sigma goes out; the others move to the front.
        keep = 0
        for j in range(g):
            sig[slot[j]] = s[j]
            if going[j]:
                slot[keep] = slot[j]
                cm[keep] = cm[j]
                m[keep] = m[j]
                s[keep] = s[j]
                i1[keep] = i1[j]
                i2[keep] = i2[j]
                bl1[keep] = bl1[j]
                bu1[keep] = bu1[j]
                bl2[keep] = bl2[j]
                bu2[keep] = bu2[j]
                sum1[keep] = sum1[j]
                sum2[keep] = sum2[j]
                nlo[keep] = nlo[j]
                nhi[keep] = nhi[j]
                going[keep] = 1
                keep += 1
        g = nact
        dense = False
    for j in range(g):
        sig[slot[j]] = s[j]


@njit(nogil=True, cache=True, error_model="numpy")
def winsor_scratch(nf, lanes):
    """Scratch of :func:`winsor_lanes` for chunks of up to ``lanes`` lanes of ``nf`` values
    (allocated once per combine: some hundred KB, which allocated per chunk cost page faults)."""
    group = max(8, min(lanes, _GROUP_BYTES // (24 * (nf + 1))))
    return (np.empty((nf, group), np.float64), np.empty((nf + 1, group), np.float64),
            np.empty((nf + 1, group), np.float64), np.empty((16, group), np.float64),
            np.empty((5, group), np.int64), np.empty((5, group), np.int64))


@njit(nogil=True, cache=True, error_model="numpy")
def winsor_lanes(scratch, nlanes, nvalid, sigma_lo, sigma_hi, maxiters, lo_arr, hi_arr, work):
    """Kept ranges of winsorized sigma clipping (module docstring; ``maxiters < 0``: until
    nothing changes) of every lane ``q < nlanes`` of a sorted chunk (``scratch[:, q]`` holds
    lane q's ``nvalid[q]`` values sorted, float32), into ``lo_arr`` / ``hi_arr``; ``work``:
    :func:`winsor_scratch`.

    Lanes advance together, in groups: each iteration gathers the lanes still clipping, takes
    their median (a read at the range's middle), prefix sums about it and plain sample sigma
    in loops over rows (a vectorised one where every lane of the group holds all its values),
    refines sigma for all of them at once (:func:`_winsor_refine`) and moves each range's ends
    past the values beyond the bounds. This replaced a per-pixel loop of winsorizing steps:
    2.7x the time of sigma clipping's combine before, 2.1x after (25 frames of 1024^2,
    benchmarks/bench_rejections.py).
    """
    nf = scratch.shape[0]
    xs, pre1, pre2, fw, iw, jw = work
    group = xs.shape[1]
    act, a_, b_, ja, jb = jw[0], jw[1], jw[2], jw[3], jw[4]  # a_, b_: each lane's range
    # per slot j: the range (ja, jb), count, median, sigma of lane act[j]
    jn, jm, js = fw[13], fw[14], fw[15]
    for q0 in range(0, nlanes, group):
        g = min(group, nlanes - q0)
        nact = 0
        for t in range(g):
            n = np.int64(nvalid[q0 + t])
            a_[t] = 0
            b_[t] = n
            if n >= MIN_KEPT:
                act[nact] = t
                nact += 1
        it = 0
        while nact > 0:
            for j in range(nact):
                t = act[j]
                a = a_[t]
                b = b_[t]
                mid = a + ((b - a) >> 1)
                if (b - a) & 1:
                    jm[j] = np.float64(scratch[mid, q0 + t])
                else:
                    jm[j] = 0.5 * (np.float64(scratch[mid - 1, q0 + t])
                                   + np.float64(scratch[mid, q0 + t]))
                ja[j] = a
                jb[j] = b
                jn[j] = np.float64(b - a)
            # Values and prefix sums about the median (which keeps them small); the rows
            # outside a lane's range add nothing.
            for j in range(nact):
                pre1[0, j] = 0.0
                pre2[0, j] = 0.0
            full = nact == g
            for j in range(nact):
                full = full and ja[j] == 0 and jb[j] == nf
            for k in range(nf if full else 0):
                # Every lane of the group, each with all its rows (the first iteration, and
                # usually every value valid): no gather, no mask, a loop that vectorises.
                src = scratch[k, q0:q0 + g]
                row = xs[k]
                p1 = pre1[k]
                p2 = pre2[k]
                n1 = pre1[k + 1]
                n2 = pre2[k + 1]
                for j in range(g):
                    x = np.float64(src[j])
                    row[j] = x
                    d = x - jm[j]
                    n1[j] = p1[j] + d
                    n2[j] = p2[j] + d * d
            for k in range(0 if full else nf):
                src = scratch[k]
                row = xs[k]
                p1 = pre1[k]
                p2 = pre2[k]
                n1 = pre1[k + 1]
                n2 = pre2[k + 1]
                for j in range(nact):
                    x = np.float64(src[q0 + act[j]])
                    row[j] = x
                    inside = (k >= ja[j]) & (k < jb[j])
                    d = (x - jm[j]) if inside else 0.0
                    n1[j] = p1[j] + d
                    n2[j] = p2[j] + d * d
            for j in range(nact):  # plain sample sigma, ddof 1
                mm = jn[j]
                s1 = pre1[nf, j]
                js[j] = math.sqrt(max(pre2[nf, j] - s1 * s1 / mm, 0.0) / (mm - 1.0))
            _winsor_refine(xs, pre1, pre2, nact, ja, jb, jm, jn, js, fw, iw)
            # The iteration's rejection: values below / above the bounds leave the range.
            it += 1
            keep = 0
            for j in range(nact):
                t = act[j]
                a = ja[j]
                b = jb[j]
                lower = jm[j] - sigma_lo * js[j]
                upper = jm[j] + sigma_hi * js[j]
                na = a
                while na < b and xs[na, j] < lower:
                    na += 1
                nb = b
                while nb > na and xs[nb - 1, j] > upper:
                    nb -= 1
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
