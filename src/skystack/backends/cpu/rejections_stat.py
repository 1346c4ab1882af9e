"""Statistical rejections of the CPU backend: generalized ESD, IRAF's ccdclip and pclip.

Each works on one pixel's ``n`` valid values sorted ascending (``col[0:n]``, float64) and
returns the kept range ``[lo, hi)`` of them, as every rejection of
:func:`skystack.backends.cpu.kernels.combine_sorted` does. The same algorithms, written once
for the GPU and the host tests, are in ``kernels/sk_reject_stat.cuh``; they give the same
ranges up to float64 rounding of the sums.

``esd``
    Rosner's (1983) generalized extreme Studentized deviate test (Siril's "GESDT"): with at most
    ``r = min(floor(esd_max_frac * n), n - 2)`` outliers, step ``i = 1..r`` removes the value
    farthest from the mean of those left (always the lowest or the highest, the highest on a
    tie) with ``R_i = max|x - mean| / s`` (``s``: sample standard deviation, ddof = 1, as NIST's
    handbook and Rosner define it; 0 when ``s`` is 0) and
    ``lambda_i = (n - i) t / sqrt((n - i - 1 + t^2) (n - i + 1))``, ``t`` the
    ``1 - alpha / (2 (n - i + 1))`` quantile of Student's t with ``n - i - 1`` degrees of freedom.
    The number of outliers is the largest ``i`` with ``R_i > lambda_i`` (0 if none): the values
    removed by steps ``1..i`` are rejected. Defaults ``esd_max_frac = 0.3``,
    ``esd_alpha = 0.05`` (the values Siril's GESDT offers; Siril's exact statistic may differ).
``ccdclip``
    IRAF imcombine's CCD noise-model clip. The centre ``c`` is the median of the values kept so
    far (``center = median``, IRAF's ``mclip = yes``) or their mean (``center = mean``; in the
    first round without the lowest and highest value when there are at least 3, as IRAF does).
    The values reaching the kernels are normalised, ``x = raw * s + z``, with one ``s`` and ``z``
    for all frames (other scalings are refused before any pixel,
    :mod:`skystack.rejection_noise`); the noise model applies to the raw values, as in IRAF:
    ``c_raw = (c - z) / s``, ``sigma_raw = sqrt((rdnoise / gain)^2 + max(c_raw, 0) / gain +
    (snoise c_raw)^2)`` (gain in e-/ADU of the raw values, rdnoise in e-, snoise a fraction) and
    ``sigma = |s| sigma_raw`` in the normalised units. Values below ``c - sigma_low sigma`` or
    above ``c + sigma_high sigma`` are rejected and the round is repeated on the values left
    until it rejects nothing (IRAF iterates to convergence; ``maxiters`` is not used). A round
    that would reject every value is not applied (IRAF's ``nkeep = 1`` adds back the values of
    smallest residual instead; here the previous round's values are kept). Fewer than 2 values:
    nothing rejected.
``pclip``
    IRAF imcombine's percentile clip, not iterated. The median (mean of the two middle values
    for even n); the *median pixel* is the lower middle value when counting down, the upper when
    counting up. ``pclip`` with ``|pclip| >= 1`` is a number of values (truncated to an integer),
    else a fraction of the values beside the median pixel of **all** ``n_frames`` frames
    (rounded half up: IRAF uses the same percentile pixel whatever was masked), at least 1 and
    at most the values beside the median pixel of this pixel; negative counts downwards. The
    spread is ``|median - x_p|`` of that percentile pixel ``x_p``; values below
    ``median - sigma_low spread`` or above ``median + sigma_high spread`` are rejected. Fewer
    than 3 values (none beside the median pixel): nothing rejected. Default ``pclip = -0.5``
    (IRAF's).

The inverse Student t CDF is Hill's (1970, CACM algorithm 396) approximation on top of
Acklam's normal quantile, both from their published descriptions; ``tests/test_rejections_stat``
measures it against ``scipy.stats.t.ppf``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..kernel_interface import Reject

REJ_ESD, REJ_CCDCLIP, REJ_PCLIP = (int(Reject[r]) for r in ("ESD", "CCDCLIP", "PCLIP"))

# Acklam's rational approximation of the standard normal quantile (|relative error| < 1.2e-9).
_NA = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
       1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
_NB = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
       6.680131188771972e+01, -1.328068155288572e+01)
_NC = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
       -2.549671010177264e+00, 4.374664141464968e+00, 2.938163982698783e+00)
_ND = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
       3.754408661907416e+00)
_P_LOW = 0.02425


@njit(nogil=True, cache=True)
def normal_quantile(p: float) -> float:
    """Lower-tail standard normal quantile of ``p`` in (0, 1) (Acklam's approximation)."""
    a0, a1, a2, a3, a4, a5 = _NA
    b0, b1, b2, b3, b4 = _NB
    c0, c1, c2, c3, c4, c5 = _NC
    d0, d1, d2, d3 = _ND
    if p < _P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        return ((((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5)
                / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1.0))
    if p > 1.0 - _P_LOW:
        q = math.sqrt(-2.0 * math.log(1.0 - p))
        return -((((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5)
                 / ((((d0 * q + d1) * q + d2) * q + d3) * q + 1.0))
    q = p - 0.5
    r = q * q
    return ((((((a0 * r + a1) * r + a2) * r + a3) * r + a4) * r + a5) * q
            / (((((b0 * r + b1) * r + b2) * r + b3) * r + b4) * r + 1.0))


@njit(nogil=True, cache=True)
def student_t_two_tailed(p: float, df: int) -> float:
    """t > 0 with P(|T| > t) = ``p`` for Student's t with ``df >= 1`` degrees of freedom (Hill
    1970, algorithm 396; exact for df 1 and 2)."""
    if df == 1:
        h = p * (0.5 * math.pi)
        return math.cos(h) / math.sin(h)
    if df == 2:
        return math.sqrt(2.0 / (p * (2.0 - p)) - 2.0)
    n = float(df)
    a = 1.0 / (n - 0.5)
    b = 48.0 / (a * a)
    c = ((20700.0 * a / b - 98.0) * a - 16.0) * a + 96.36
    d = ((94.5 / (b + c) - 3.0) / b + 1.0) * math.sqrt(a * 0.5 * math.pi) * n
    x = d * p
    y = x ** (2.0 / n)
    if y > 0.05 + a:
        # Asymptotic inverse expansion about the normal quantile.
        x = normal_quantile(0.5 * p)
        y = x * x
        if df < 5:
            c = c + 0.3 * (n - 4.5) * (x + 0.6)
        c = (((0.05 * d * x - 5.0) * x - 7.0) * x - 2.0) * x + b + c
        y = (((((0.4 * y + 6.3) * y + 36.0) * y + 94.5) / c - y - 3.0) / b + 1.0) * x
        y = a * y * y
        y = math.expm1(y)
    else:
        y = (((1.0 / (((n + 6.0) / (n * y) - 0.089 * d - 0.822) * (n + 2.0) * 3.0)
               + 0.5 / (n + 4.0)) * y - 1.0) * (n + 1.0) / (n + 2.0) + 1.0 / y)
    return math.sqrt(n * y)


@njit(nogil=True, cache=True)
def esd_lambda(n: int, i: int, alpha: float) -> float:
    """Rosner's critical value lambda_i for step ``i`` (from 1) of ``n`` values."""
    m = n - i  # values left after step i
    t = student_t_two_tailed(alpha / (m + 1), m - 1)
    return m * t / math.sqrt((m - 1 + t * t) * (m + 1))


@njit(nogil=True, cache=True)
def esd_lambda_table(nf: int, alpha: float) -> np.ndarray:
    """``table[n, i]`` = lambda_i of ``n`` values (0 where undefined), for n <= ``nf``."""
    table = np.zeros((nf + 1, max(nf - 1, 1)), np.float64)
    for n in range(3, nf + 1):
        for i in range(1, n - 1):
            table[n, i] = esd_lambda(n, i, alpha)
    return table


@njit(nogil=True, cache=True)
def _count_lt(col, n, x):
    a, b = 0, n
    while a < b:
        m = (a + b) >> 1
        if col[m] < x:
            a = m + 1
        else:
            b = m
    return a


@njit(nogil=True, cache=True)
def _count_gt(col, n, x):
    a, b = 0, n
    while a < b:
        m = (a + b) >> 1
        if col[m] <= x:
            a = m + 1
        else:
            b = m
    return n - a


@njit(nogil=True, cache=True)
def _median(col, a, b):
    m = b - a
    return 0.5 * (col[a + ((m - 1) >> 1)] + col[a + (m >> 1)])


@njit(nogil=True, cache=True)
def esd_range(col, n, max_frac, lam):
    """Kept range of the generalized ESD test (module docstring); ``lam`` from
    :func:`esd_lambda_table`."""
    r = min(int(math.floor(max_frac * n)), n - 2)
    if r < 1:
        return 0, n
    s = 0.0
    for k in range(n):
        s += col[k]
    mean = s / n
    m2 = 0.0
    for k in range(n):
        d = col[k] - mean
        m2 += d * d
    a, b = 0, n
    best_a, best_b = 0, n
    for i in range(1, r + 1):
        m = b - a
        sd = math.sqrt(m2 / (m - 1))
        dlo = mean - col[a]
        dhi = col[b - 1] - mean
        if dhi >= dlo:
            x = col[b - 1]
            dev = dhi
            b -= 1
        else:
            x = col[a]
            dev = dlo
            a += 1
        big_r = dev / sd if sd > 0.0 else 0.0
        if big_r > lam[n, i]:
            best_a, best_b = a, b
        # Remove x from the running mean and sum of squared deviations (Welford, backwards).
        new_mean = (mean * m - x) / (m - 1)
        m2 = max(m2 - (x - mean) * (x - new_mean), 0.0)
        mean = new_mean
    return best_a, best_b


@njit(nogil=True, cache=True)
def ccd_sigma(c, gain, rdnoise, snoise, s0, z0):
    """Noise of a normalised value ``c`` (module docstring, ``ccdclip``)."""
    raw = (c - z0) / s0
    rn = rdnoise / gain
    return abs(s0) * math.sqrt(rn * rn + max(raw, 0.0) / gain + (snoise * raw) ** 2)


@njit(nogil=True, cache=True)
def ccdclip_range(col, n, use_median, sigma_lo, sigma_hi, gain, rdnoise, snoise, s0, z0):
    """Kept range of IRAF's ccdclip (module docstring)."""
    a, b = 0, n
    if n < 2:
        return a, b
    first = True
    while True:
        m = b - a
        if use_median:
            c = _median(col, a, b)
        else:
            # IRAF's first average leaves out the lowest and highest value.
            ea, eb = (a + 1, b - 1) if (first and m >= 3) else (a, b)
            s = 0.0
            for k in range(ea, eb):
                s += col[k]
            c = s / (eb - ea)
        sig = ccd_sigma(c, gain, rdnoise, snoise, s0, z0)
        na = min(max(_count_lt(col, n, c - sigma_lo * sig), a), b)
        nb = min(max(n - _count_gt(col, n, c + sigma_hi * sig), na), b)
        if nb - na == m or nb == na:
            return a, b
        a, b = na, nb
        first = False


@njit(nogil=True, cache=True)
def pclip_rank(pclip, nf):
    """How many values beside the median pixel the percentile pixel lies, from all ``nf``
    frames (module docstring, ``pclip``)."""
    if abs(pclip) >= 1.0:
        return int(abs(pclip))
    beside = (nf - 1) // 2 if pclip < 0 else nf - 1 - nf // 2
    return int(math.floor(abs(pclip) * beside + 0.5))


@njit(nogil=True, cache=True)
def pclip_range(col, n, rank, downward, sigma_lo, sigma_hi):
    """Kept range of IRAF's pclip (module docstring); ``rank`` from :func:`pclip_rank`."""
    lo_mid = (n - 1) >> 1
    hi_mid = n >> 1
    beside = lo_mid if downward else n - 1 - hi_mid
    if beside < 1:
        return 0, n
    k = min(max(rank, 1), beside)
    med = _median(col, 0, n)
    xp = col[lo_mid - k] if downward else col[hi_mid + k]
    spread = abs(med - xp)
    lo = _count_lt(col, n, med - sigma_lo * spread)
    hi = max(n - _count_gt(col, n, med + sigma_hi * spread), lo)
    return lo, hi


@njit(nogil=True, cache=True)
def stat_ranges(reject, scratch, b, nvalid, col, use_median, sigma_lo, sigma_hi, esd_max_frac,
                lam, gain, rdnoise, snoise, s0, z0, pclip, lo_arr, hi_arr):
    """Kept ranges ``[lo_arr[q], hi_arr[q])`` of the lanes ``q < b`` of a sorted chunk
    (``scratch[:nvalid[q], q]`` the valid values; ``col`` a float64 work array of n_frames)."""
    nf = scratch.shape[0]
    rank = pclip_rank(pclip, nf)
    for q in range(b):
        n = nvalid[q]
        for i in range(n):
            col[i] = scratch[i, q]
        if n == 0:
            lo, hi = 0, 0
        elif reject == REJ_ESD:
            lo, hi = esd_range(col, n, esd_max_frac, lam)
        elif reject == REJ_CCDCLIP:
            lo, hi = ccdclip_range(col, n, use_median, sigma_lo, sigma_hi, gain, rdnoise,
                                   snoise, s0, z0)
        else:
            lo, hi = pclip_range(col, n, rank, pclip < 0, sigma_lo, sigma_hi)
        lo_arr[q] = lo
        hi_arr[q] = hi
