"""Siril-style rejections of one pixel's sorted values, for the CPU backend's sorted combine.

Each function takes ``col``, a pixel's ``n`` valid values sorted ascending (float64), and returns
the kept contiguous range ``(lo, hi)`` of it, as every rejection of
:func:`skystack.backends.cpu.kernels.combine_sorted` does. The GPU kernels implement the same
definitions in ``kernels/sk_reject.cuh``, with the same float64 arithmetic in the same order.

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

from numba import njit

MIN_KEPT = 3
WINSOR_CUT = 1.5
WINSOR_SCALE = 1.134
WINSOR_TOL = 5e-4
WINSOR_MAX_STEPS = 50


@njit(nogil=True, cache=True)
def _median(col, a, b):
    m = b - a
    mid = a + m // 2
    if m % 2 == 1:
        return col[mid]
    return 0.5 * (col[mid - 1] + col[mid])


@njit(nogil=True, cache=True)
def _sum(col, a, b):
    s = 0.0
    for i in range(a, b):
        s += col[i]
    return s


@njit(nogil=True, cache=True)
def _ssd(col, a, b, mean):
    s = 0.0
    for i in range(a, b):
        d = col[i] - mean
        s += d * d
    return s


@njit(nogil=True, cache=True)
def _first_not_below(col, a, b, x):
    """First index of [a, b) whose value is >= x (b if none)."""
    while a < b:
        m = (a + b) >> 1
        if col[m] < x:
            a = m + 1
        else:
            b = m
    return a


@njit(nogil=True, cache=True)
def _first_above(col, a, b, x):
    """First index of [a, b) whose value is > x (b if none)."""
    while a < b:
        m = (a + b) >> 1
        if col[m] <= x:
            a = m + 1
        else:
            b = m
    return a


@njit(nogil=True, cache=True)
def winsorized_sigma(col, a, b, med):
    """Huber's winsorized sigma of the sorted range [a, b) about ``med`` (module docstring)."""
    m = b - a
    mean = _sum(col, a, b) / m
    sigma = math.sqrt(_ssd(col, a, b, mean) / (m - 1))
    for _ in range(WINSOR_MAX_STEPS):
        lo = med - WINSOR_CUT * sigma
        hi = med + WINSOR_CUT * sigma
        # Sorted: the values clamped to lo (hi) are the first (last) ones of the range.
        i1 = _first_not_below(col, a, b, lo)
        i2 = _first_above(col, i1, b, hi)
        nlo = float(i1 - a)
        nhi = float(b - i2)
        wmean = (nlo * lo + _sum(col, i1, i2) + nhi * hi) / m
        dl = lo - wmean
        dh = hi - wmean
        wssd = nlo * dl * dl + _ssd(col, i1, i2, wmean) + nhi * dh * dh
        nxt = WINSOR_SCALE * math.sqrt(wssd / (m - 1))
        done = abs(nxt - sigma) <= WINSOR_TOL * sigma
        sigma = nxt
        if done:
            break
    return sigma


@njit(nogil=True, cache=True)
def winsor_range(col, n, sigma_lo, sigma_hi, maxiters):
    """Kept range of winsorized sigma clipping (``maxiters < 0``: until nothing changes)."""
    a = 0
    b = n
    it = 0
    while b - a >= MIN_KEPT:
        med = _median(col, a, b)
        s = winsorized_sigma(col, a, b, med)
        na = _first_not_below(col, a, b, med - sigma_lo * s)
        nb = _first_above(col, na, b, med + sigma_hi * s)
        if (na == a and nb == b) or nb - na < MIN_KEPT:
            break
        a = na
        b = nb
        it += 1
        if maxiters >= 0 and it >= maxiters:
            break
    return a, b


@njit(nogil=True, cache=True)
def linfit_range(col, n, sigma_lo, sigma_hi, maxiters):
    """Kept range of linear-fit clipping from the ends (module docstring)."""
    a = 0
    b = n
    it = 0
    while b - a >= MIN_KEPT:
        m = b - a
        rmean = 0.5 * (m - 1)
        ymean = _sum(col, a, b) / m
        sxy = 0.0
        for i in range(a, b):
            sxy += (float(i - a) - rmean) * col[i]
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


@njit(nogil=True, cache=True)
def pctclip_range(col, n, pct_lo, pct_hi):
    """Kept range of Siril's percentile clipping; nothing rejected where the median is 0."""
    med = _median(col, 0, n)
    mag = abs(med)
    if mag == 0.0:
        return 0, n
    lo = _first_not_below(col, 0, n, med - pct_lo * mag)
    hi = _first_above(col, lo, n, med + pct_hi * mag)
    return lo, hi
