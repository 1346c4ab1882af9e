"""The variance of rank-trimmed means (``--reject minmax`` and ``percentile``) for the noise
model and propagated uncertainties.

``model`` and ``propagate`` give a frame's variance ``var``; the combined mean's would be
``var / h`` with h the kept values (COUNT) if the kept values were h independent draws. A trim
keeps the middle of the sorted values instead, which scatter less than the draws but whose mean
moves with all n of them: for Gaussian noise the trimmed mean of n values, a fraction a_lo cut
below and a_hi above, has the asymptotic variance ``var * V(a_lo, a_hi) / n`` with

    V = Var(W) / (1 - a_lo - a_hi)**2,   W = the unit Gaussian clamped to its a_lo and 1 - a_hi
                                              quantiles (Tukey & McLaughlin 1963)

e.g. the interquartile mean: V = 1.19 (var / h would say 2.0), min/max 2/2 of 20: V = 1.06
(1.25). The factor here turns ``var / h`` into that: ``V h / n``, at each pixel from its kept
count, since the trim's n follows from h (minmax: n = h + nlow + nhigh; percentile: the largest
n up to the number of frames whose cut keeps h, mirroring the kernels' ``floor(n p / 100)``:
18 and 20 values both keep 10 of an interquartile mean, and pixels without NaNs are the rule).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

_UNIT = NormalDist()


def gaussian_trimmed_mean_variance(a_lo: float, a_hi: float) -> float:
    """n x the asymptotic variance of the mean of a unit Gaussian sample of n values with the
    fractions ``a_lo`` (lowest) and ``a_hi`` (highest) trimmed: 1 without trimming."""
    if a_lo <= 0.0 and a_hi <= 0.0:
        return 1.0
    kept = 1.0 - a_lo - a_hi
    a = _UNIT.inv_cdf(a_lo) if a_lo > 0.0 else -math.inf
    b = _UNIT.inv_cdf(1.0 - a_hi) if a_hi > 0.0 else math.inf
    pa = _UNIT.pdf(a) if a_lo > 0.0 else 0.0
    pb = _UNIT.pdf(b) if a_hi > 0.0 else 0.0
    a_pa = a * pa if a_lo > 0.0 else 0.0
    b_pb = b * pb if a_hi > 0.0 else 0.0
    # Moments of W = clamp(Z, a, b): the middle part plus the clamped tails.
    m1 = (pa - pb) + (a_lo * a if a_lo > 0.0 else 0.0) + (a_hi * b if a_hi > 0.0 else 0.0)
    m2 = (kept + a_pa - b_pb) + (a_lo * a * a if a_lo > 0.0 else 0.0) \
        + (a_hi * b * b if a_hi > 0.0 else 0.0)
    return (m2 - m1 * m1) / (kept * kept)


def _frames_of_kept(h: int, reject: str, options, n_frames: int) -> int | None:
    """The valid values n at a pixel that kept h after the rank trim; None if none fits."""
    if reject == "minmax":
        return h + options.nlow + options.nhigh
    for n in range(n_frames, h - 1, -1):
        cut = math.floor(n * options.plow / 100.0) + math.floor(n * options.phigh / 100.0)
        if n - cut == h:
            return n
    return None


def rank_trim_variance_factor(count: np.ndarray, options, n_frames: int) -> np.ndarray | None:
    """Per pixel, the factor from ``var / COUNT`` to the Gaussian variance of the trimmed mean
    (module docstring), for the mean and sum with ``minmax`` or ``percentile`` rejection of
    ``n_frames`` frames; None for every other combine (nothing to change). ``options``: a
    CombineOptions."""
    if options.method not in ("mean", "sum") or options.reject not in ("minmax", "percentile"):
        return None
    count = np.asarray(count)
    top = int(count.max(initial=0))
    table = np.ones(top + 1, np.float64)
    for h in range(1, top + 1):
        n = _frames_of_kept(h, options.reject, options, n_frames)
        if n is None or n <= h:
            continue
        if options.reject == "minmax":
            lo, hi_cut = options.nlow, options.nhigh
        else:
            lo = math.floor(n * options.plow / 100.0)
            hi_cut = n - h - lo
        table[h] = gaussian_trimmed_mean_variance(lo / n, hi_cut / n) * h / n
    return table[np.clip(count, 0, top)]
