"""Slow, obviously correct references built on numpy, astropy and ccdproc (never on skystack).

``reference_combine`` implements the documented semantics of each method and rejection with
masked arrays: rejection yields a mask of kept values, reduction consumes it.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.stats import sigma_clip

MAD_TO_SIGMA = 1.482602218505602
IQR_TO_SIGMA = 1.3489795003921634


def keep_mask(cube: np.ndarray, reject: str = "none", *, center="median", spread="std",
              sigma_low=3.0, sigma_high=3.0, maxiters=5, nlow=1, nhigh=1, low=None, high=None,
              plow=10.0, phigh=10.0, pctclip_low=0.2, pctclip_high=0.1,
              raw: np.ndarray | None = None, esd_alpha=0.05,
              esd_max_frac=0.3, gain=None, rdnoise=None, snoise=0.0, pclip=-0.5,
              scale=1.0, zero=0.0) -> np.ndarray:
    """Boolean (N, H, W) array: True where a value is kept. ``raw`` = values before scaling,
    for the range rejection; ``scale``/``zero``: the (common) normalisation of ccdclip's frames."""
    valid = np.isfinite(cube)
    if reject == "none":
        return valid
    if reject == "pctclip":
        return valid & _pctclip_keep(cube, pctclip_low, pctclip_high)
    if reject in ("winsor", "linfit"):
        clip = _winsor_kept if reject == "winsor" else _linfit_kept
        return _per_pixel_sorted(cube, valid, lambda y: clip(y, sigma_low, sigma_high, maxiters))
    if reject == "esd":
        return _per_pixel(cube, lambda v: _esd_keep(v, esd_alpha, esd_max_frac))
    if reject == "ccdclip":
        return _per_pixel(cube, lambda v: _ccdclip_keep(
            v, center, sigma_low, sigma_high, gain, rdnoise, snoise, scale, zero))
    if reject == "pclip":
        nf = cube.shape[0]
        return _per_pixel(cube, lambda v: _pclip_keep(v, nf, pclip, sigma_low, sigma_high))
    if reject == "range":
        r = cube if raw is None else raw
        lo = -np.inf if low is None else low
        hi = np.inf if high is None else high
        with np.errstate(invalid="ignore"):
            return valid & (r >= lo) & (r <= hi)
    if reject == "sigclip":
        clipped = sigma_clip(cube, sigma_lower=sigma_low, sigma_upper=sigma_high,
                             maxiters=None if maxiters == 0 else maxiters, cenfunc=center,
                             stdfunc="std" if spread == "std" else "mad_std", axis=0)
        return ~np.ma.getmaskarray(clipped)
    # Rank-based: ranks of the valid values along the frame axis, NaNs last.
    order = np.argsort(np.where(valid, cube, np.inf), axis=0, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(cube.shape[0])[:, None, None] * np.ones_like(order),
                      axis=0)
    n = valid.sum(axis=0)
    if reject == "minmax":
        drop_lo, drop_hi = nlow, nhigh
    elif reject == "percentile":
        drop_lo = np.floor(n * plow / 100.0).astype(int)
        drop_hi = np.floor(n * phigh / 100.0).astype(int)
    else:
        raise ValueError(reject)
    return valid & (ranks >= drop_lo) & (ranks < n - drop_hi)


def _pctclip_keep(cube, lo_frac, hi_frac):
    """Siril's percentile clipping: relative distance from the median, kept where it is 0."""
    with _quiet():
        med = np.nanmedian(cube.astype(np.float64), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = (med - cube) / np.abs(med) > lo_frac
        above = (cube - med) / np.abs(med) > hi_frac
    return (med == 0) | ~(below | above)


def _per_pixel_sorted(cube, valid, kept_slice):
    """Mask from ``kept_slice(sorted valid values) -> (lo, hi)``, applied pixel by pixel to the
    values by rank (stable, so that ties at a cut go to the earliest frames)."""
    keep = np.zeros(cube.shape, bool)
    for j, i in np.ndindex(cube.shape[1:]):
        ok = np.flatnonzero(valid[:, j, i])
        order = ok[np.argsort(cube[ok, j, i], kind="stable")]
        lo, hi = kept_slice(cube[order, j, i].astype(np.float64))
        keep[order[lo:hi], j, i] = True
    return keep


def winsor_sigma(x, med):
    """Winsorized sigma of the values ``x`` about ``med``, from its definition: the sample
    sigma, refined by winsorizing at ``med -+ 1.5 s`` (``s = 1.134 std``, ddof 1) until it
    changes by at most 5e-4 of itself (at most 50 steps)."""
    s = np.std(x, ddof=1)
    for _ in range(50):
        w = np.clip(x, med - 1.5 * s, med + 1.5 * s)
        s_new = 1.134 * np.std(w, ddof=1)
        done = abs(s_new - s) <= 5e-4 * s
        s = s_new
        if done:
            break
    return s


def _winsor_kept(y, sigma_low, sigma_high, maxiters, min_kept=3):
    """Winsorized sigma clipping from its definition, on sorted values; returns (lo, hi)."""
    lo, hi, it = 0, len(y), 0
    while hi - lo >= min_kept:
        x = y[lo:hi]
        med = np.median(x)
        s = winsor_sigma(x, med)
        kept = np.flatnonzero((x >= med - sigma_low * s) & (x <= med + sigma_high * s))
        if kept.size == 0:
            break
        nlo, nhi = lo + kept[0], lo + kept[-1] + 1
        if (nlo, nhi) == (lo, hi) or nhi - nlo < min_kept:
            break
        lo, hi, it = nlo, nhi, it + 1
        if maxiters and it >= maxiters:
            break
    return lo, hi


def _linfit_kept(y, sigma_low, sigma_high, maxiters, min_kept=3):
    """Linear-fit clipping trimmed from the ends, from its definition; returns (lo, hi)."""
    lo, hi, it = 0, len(y), 0
    while hi - lo >= min_kept:
        x = y[lo:hi]
        rank = np.arange(len(x), dtype=np.float64)
        slope, intercept = np.polyfit(rank, x, 1)
        resid = x - (intercept + slope * rank)
        s = np.mean(np.abs(resid))
        a, b = 0, len(x)
        while a < b and resid[a] < -sigma_low * s:
            a += 1
        while b > a and resid[b - 1] > sigma_high * s:
            b -= 1
        if (a, b) == (0, len(x)) or b - a < min_kept:
            break
        lo, hi, it = lo + a, lo + b, it + 1
        if maxiters and it >= maxiters:
            break
    return lo, hi
def _per_pixel(cube: np.ndarray, keep_of) -> np.ndarray:
    """Mask from ``keep_of(valid values of a pixel) -> bool array``, pixel by pixel."""
    keep = np.zeros(cube.shape, bool)
    for idx in np.ndindex(cube.shape[1:]):
        col = cube[(slice(None), *idx)]
        ok = np.flatnonzero(np.isfinite(col))
        if ok.size:
            keep[(ok, *idx)] = keep_of(col[ok].astype(np.float64))
    return keep


def _esd_keep(v: np.ndarray, alpha: float, max_frac: float) -> np.ndarray:
    """Rosner's generalized ESD test (NIST handbook 1.3.5.17.3): mean, sample std (ddof 1),
    lambda from scipy's exact t quantile."""
    from scipy import stats

    n = v.size
    r = min(math.floor(max_frac * n), n - 2)
    order = np.argsort(v, kind="stable")
    x = v[order]
    a, b = 0, n
    best = (0, n)
    for i in range(1, r + 1):
        rest = x[a:b]
        mean, s = rest.mean(), rest.std(ddof=1)
        if x[b - 1] - mean >= mean - x[a]:
            dev = x[b - 1] - mean
            b -= 1
        else:
            dev = mean - x[a]
            a += 1
        big_r = dev / s if s > 0 else 0.0
        m = n - i
        t = stats.t.ppf(1 - alpha / (2 * (m + 1)), m - 1)
        lam = m * t / math.sqrt((m - 1 + t * t) * (m + 1))
        if big_r > lam:
            best = (a, b)
    keep = np.zeros(n, bool)
    keep[order[best[0]:best[1]]] = True
    return keep


def _ccdclip_keep(v, center, sigma_low, sigma_high, gain, rdnoise, snoise, scale, zero):
    """IRAF imcombine's ccdclip: model sigma of the raw value at the centre, iterated."""
    keep = np.ones(v.size, bool)
    first = True
    while v.size >= 2:
        kv = np.sort(v[keep])
        if center == "median":
            c = np.median(kv)
        else:
            c = kv[1:-1].mean() if (first and kv.size >= 3) else kv.mean()
        raw = (c - zero) / scale
        sig = abs(scale) * math.sqrt((rdnoise / gain) ** 2 + max(raw, 0.0) / gain
                                     + (snoise * raw) ** 2)
        new = keep & (v >= c - sigma_low * sig) & (v <= c + sigma_high * sig)
        if new.sum() == keep.sum() or not new.any():
            break
        keep = new
        first = False
    return keep


def _pclip_keep(v, nf, pclip, sigma_low, sigma_high):
    """IRAF imcombine's pclip (its help's definition and examples), not iterated."""
    n = v.size
    x = np.sort(v)
    down = pclip < 0
    mpix = (n - 1) // 2 if down else n // 2
    beside = mpix if down else n - 1 - mpix
    if beside < 1:
        return np.ones(n, bool)
    if abs(pclip) >= 1:
        k = int(abs(pclip))
    else:
        k = math.floor(abs(pclip) * ((nf - 1) // 2 if down else nf - 1 - nf // 2) + 0.5)
    k = min(max(k, 1), beside)
    med = np.median(x)
    spread = abs(med - x[mpix - k if down else mpix + k])
    return (v >= med - sigma_low * spread) & (v <= med + sigma_high * spread)


def winsorized_se(cube: np.ndarray, keep: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Tukey-McLaughlin standard error of the mean of the kept values, per pixel: s_w sqrt(n) / h
    with n the valid values, h the kept ones and s_w the ddof=1 standard deviation of the valid
    values clipped to [min kept, max kept] (the winsorized sample). NaN where h < 2."""
    x = cube.astype(np.float64)
    lo = np.where(keep, x, np.inf).min(axis=0)
    hi = np.where(keep, x, -np.inf).max(axis=0)
    with np.errstate(invalid="ignore"):
        xw = np.where(valid, np.clip(x, lo, hi), np.nan)
    n = valid.sum(axis=0)
    h = keep.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        se = np.nanstd(xw, axis=0, ddof=1) * np.sqrt(n) / h
    return np.where(h >= 2, se, np.nan)


def reduce_kept(cube: np.ndarray, keep: np.ndarray, method: str,
                weights: np.ndarray | None = None, valid: np.ndarray | None = None):
    """(image, uncertainty, count) of the kept values, float64, NaN where nothing is kept.

    The mean's and sum's uncertainty with rejection is the winsorized one (:func:`winsorized_se`,
    weighted: the weighted SE times its ratio to the naive unweighted one); ``valid``, the values
    the rejection saw (default: the finite ones; range rejection: ``keep``)."""
    valid = np.isfinite(cube) if valid is None else valid
    x = np.where(keep, cube.astype(np.float64), np.nan)
    n = keep.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        if method == "median":
            value = np.nanmedian(x, axis=0)
            q1, q3 = np.nanpercentile(x, [25, 75], axis=0)
            unc = math.sqrt(math.pi / 2) * (q3 - q1) / IQR_TO_SIGMA / np.sqrt(n)
            unc = np.where(n >= 2, unc, np.nan)
        else:
            w = np.ones(cube.shape[0]) if weights is None else np.asarray(weights, np.float64)
            wk = np.where(keep, w[:, None, None], 0.0)
            v1 = wk.sum(0)
            v2 = (wk**2).sum(0)
            mean = np.nansum(wk * np.nan_to_num(x), 0) / v1
            ssd = (wk * np.nan_to_num(x - mean) ** 2).sum(0)
            s = np.sqrt(ssd / (v1 - v2 / v1))
            s = np.where(n >= 2, s, np.nan)
            if method in ("mean", "sum"):
                se_w = winsorized_se(cube, keep, valid)
                s_naive = np.nanstd(x, axis=0, ddof=1) / np.sqrt(n)
                trimmed = (n < valid.sum(axis=0)) & (n >= 2)
                ratio = np.where(trimmed, se_w / s_naive, 1.0)  # se_w itself when unweighted
                se = np.where(trimmed & (s_naive == 0), se_w, s * np.sqrt(v2) / v1 * ratio)
                if method == "mean":
                    value, unc = mean, se
                else:
                    value, unc = mean * v1, se * v1
            elif method == "min":
                value, unc = np.nanmin(x, 0), s
            elif method == "max":
                value, unc = np.nanmax(x, 0), s
            else:
                raise ValueError(method)
    value = np.where(n > 0, value, np.nan)
    unc = np.where(n > 0, unc, np.nan)
    return value, unc, n


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def make_stack(n=15, shape=(37, 53), *, seed=0, nan_fraction=0.03, outlier_fraction=0.03,
               level=100.0, noise=5.0, dead_pixels=True) -> np.ndarray:
    """Random float32 stack with cosmic-ray-like outliers, NaNs and a pixel with no valid value."""
    rng = np.random.default_rng(seed)
    cube = rng.normal(level, noise, (n, *shape)).astype(np.float32)
    hits = rng.random(cube.shape) < outlier_fraction
    cube[hits] += rng.uniform(50, 5000, hits.sum()).astype(np.float32)
    lows = rng.random(cube.shape) < outlier_fraction / 3
    cube[lows] -= rng.uniform(50, 500, lows.sum()).astype(np.float32)
    cube[rng.random(cube.shape) < nan_fraction] = np.nan
    if dead_pixels:
        cube[:, 0, 0] = np.nan          # no valid value at all
        cube[1:, 0, 1] = np.nan         # a single valid value
        cube[2:, 0, 2] = np.nan         # two valid values
    return cube
