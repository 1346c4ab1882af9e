"""UNCERT of clipped and trimmed means (``--uncertainty scatter``) against ground truth.

With rejection, the standard error of the mean is the winsorized (Tukey-McLaughlin) one,
``s_w sqrt(n) / h``; the kept values' own scatter over sqrt(h) is up to 2x too small because the
trim points move with the data. Ground truth: many independent pixels, each a realisation of the
same Gaussian stack, so the scatter of the combined values across pixels is the true standard
error. Plus an independent per-pixel implementation of the winsorized SE, and scipy's
``mstats.trimmed_stde``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.nddata import CCDData, StdDevUncertainty
from scipy import integrate, stats
from scipy.stats import mstats

import skystack
from skystack.trim_efficiency import gaussian_trimmed_mean_variance
from tests.reference import keep_mask, make_stack

N_FRAMES = 20
N_PIXELS = 20_000  # 100 x 200
# Relative 1-sigma sampling error of the comparison: the empirical SD over M = 20 000 pixels has
# 1/sqrt(2M) = 0.5 %; the quadratic mean of UNCERT (per-pixel variances scatter by ~sqrt(2/19))
# adds ~0.2 %. 5 % is ~9 sigma of sampling error and leaves room for the estimator's own
# finite-N bias (measured 2.7 % for the interquartile mean of 20, 10 values kept).
TOLERANCE = 0.05

# Rejections whose UNCERT matches the truth. Measured rms(UNCERT)/true SE on this stack: rank
# trims by the winsorized SE (before it: percentile 25/25 0.54 -> 0.97, minmax 2/2 0.76 ->
# 0.995); value clips by the winsorized SE times skystack.clip_efficiency's factor (header
# UNCCLIP; without it: sigclip 3 sigma 0.98, esd 0.96, sigclip 2 sigma 0.68, with mad 0.69,
# 2.5 sigma about the mean 0.95, winsor 2 sigma 0.75, 3 sigma 0.96, pclip 0.84, linfit 2 sigma
# 0.76; with it all within 1 % here).
MATCHING = [
    ("none", {}),
    ("percentile", dict(plow=25.0, phigh=25.0)),
    ("minmax", dict(nlow=2, nhigh=2)),
    ("sigclip", dict(sigma=3.0)),
    ("esd", {}),
    ("sigclip", dict(sigma=2.0)),
    ("sigclip", dict(sigma=2.0, spread="mad")),
    ("sigclip", dict(sigma=2.5, center="mean")),
    ("winsor", dict(sigma=2.0)),
    ("winsor", dict(sigma=3.0)),
    ("pclip", {}),
    ("linfit", dict(sigma=2.0)),
]
VALUE_CLIPS = ("sigclip", "winsor", "linfit", "esd", "pclip", "ccdclip")


@pytest.fixture(scope="module")
def gaussian_stack():
    rng = np.random.default_rng(20261204)
    return rng.normal(100.0, 1.0, (N_FRAMES, 100, 200)).astype(np.float32)


def _uncert_over_true_se(cube, reject, opts, method="mean"):
    opts = {"uncertainty": "scatter", **opts}
    r = skystack.combine(cube, backend="cpu", method=method, reject=reject, **opts)
    unc = np.asarray(r.uncertainty.array, np.float64)
    true_se = np.asarray(r.data, np.float64).std(ddof=1)
    # Quadratic mean: unbiased for the plain mean's s^2 / n (the median of s is ~2 % low at N=20).
    return math.sqrt(np.nanmean(unc**2)) / true_se


@pytest.mark.parametrize("reject,opts", MATCHING)
def test_scatter_uncertainty_is_the_true_standard_error(gaussian_stack, reject, opts):
    ratio = _uncert_over_true_se(gaussian_stack, reject, opts)
    assert abs(ratio - 1.0) < TOLERANCE, f"{reject} {opts}: rms(UNCERT) / true SE = {ratio:.3f}"


@pytest.mark.parametrize("reject,opts", MATCHING[1:3])
def test_sum_uncertainty_of_fixed_trims_is_the_true_standard_error(gaussian_stack, reject, opts):
    # Fixed kept counts only: elsewhere the sum's scatter across pixels is the kept count's.
    ratio = _uncert_over_true_se(gaussian_stack, reject, opts, method="sum")
    assert abs(ratio - 1.0) < TOLERANCE, f"{reject} {opts}: rms(UNCERT) / true SE = {ratio:.3f}"


@pytest.mark.parametrize("n", [8, 50])
@pytest.mark.parametrize("reject,opts", [("sigclip", dict(sigma=2.0)),
                                         ("winsor", dict(sigma=2.0)), ("pclip", {})])
def test_value_clip_uncertainty_at_other_stack_sizes(n, reject, opts):
    # Another seed and other N than the factor's own simulation (a 2-sigma clip of 8 frames
    # keeps about 7).
    rng = np.random.default_rng(7 + n)
    cube = rng.normal(-30.0, 4.0, (n, 200, 100)).astype(np.float32)
    ratio = _uncert_over_true_se(cube, reject, opts)
    assert abs(ratio - 1.0) < TOLERANCE, f"{reject} {opts} N={n}: {ratio:.3f}"


def test_weighted_value_clip_uncertainty_is_the_true_standard_error(gaussian_stack):
    w = list(np.linspace(0.5, 2.0, N_FRAMES))
    ratio = _uncert_over_true_se(gaussian_stack, "sigclip", dict(sigma=2.0, weights=w))
    assert abs(ratio - 1.0) < TOLERANCE, f"weighted 2-sigma clip: {ratio:.3f}"


def _winsorized_se_by_sorting(cube, keep):
    """Per pixel, written out: sort the valid values, replace the ones below / above the kept
    ones by the lowest / highest kept value, SE = std(ddof=1) * sqrt(n) / h."""
    out = np.full(cube.shape[1:], np.nan)
    for idx in np.ndindex(*cube.shape[1:]):
        v = cube[(slice(None), *idx)].astype(np.float64)
        k = keep[(slice(None), *idx)]
        valid = v[np.isfinite(v)]
        kept = np.sort(v[k])
        if kept.size < 2:
            continue
        rejected = v[~k & np.isfinite(v)]
        below = int(np.sum(rejected <= kept[0]))  # rank rejections keep a range of values
        w = np.concatenate([np.full(below, kept[0]), kept,
                            np.full(rejected.size - below, kept[-1])])
        assert w.size == valid.size
        out[idx] = w.std(ddof=1) * math.sqrt(valid.size) / kept.size
    return out


CASES = [
    ("percentile", dict(plow=20.0, phigh=15.0)),
    ("minmax", dict(nlow=1, nhigh=3)),
    ("sigclip", dict(center="median", spread="std", sigma_low=2.0, sigma_high=2.0, maxiters=5)),
    ("sigclip", dict(center="mean", spread="mad", sigma_low=2.5, sigma_high=2.0, maxiters=3)),
    ("winsor", dict(sigma_low=2.0, sigma_high=2.5, maxiters=5)),
    ("esd", dict(esd_alpha=0.2, esd_max_frac=0.45)),
    ("pclip", dict(pclip=0.3)),
    ("linfit", dict(sigma_low=2.0, sigma_high=2.0, maxiters=5)),
    ("pctclip", dict(pctclip_low=0.02, pctclip_high=0.02)),
    ("ccdclip", dict(gain=1.0, rdnoise=5.0)),
]


@pytest.mark.parametrize("method", ["mean", "sum"])
@pytest.mark.parametrize("reject,opts", CASES)
def test_uncertainty_is_the_winsorized_se_pixel_by_pixel(reject, opts, method):
    cube = make_stack(n=17, shape=(9, 13), seed=len(reject) * 3 + len(method))
    r = skystack.combine(cube, backend="cpu", threads=1, method=method, reject=reject,
                         uncertainty="scatter", **opts)
    keep = keep_mask(cube, reject, **opts)
    np.testing.assert_array_equal(r.count, keep.sum(0))
    se = _winsorized_se_by_sorting(cube, keep)
    expected = se if method == "mean" else se * keep.sum(0)
    assert np.isnan(cube).any() and (keep.sum(0) < np.isfinite(cube).sum(0)).any()
    # A value clip's mean: the winsorized SE times the header's factor (checked against the
    # truth above), the same at every pixel.
    clipped_mean = method == "mean" and reject in VALUE_CLIPS
    assert ("UNCCLIP" in r.meta) == clipped_mean
    if clipped_mean:
        assert 1.0 < r.meta["UNCCLIP"] < 2.0
        expected = expected * r.meta["UNCCLIP"]
    np.testing.assert_allclose(r.uncertainty.array, expected, rtol=2e-5, atol=1e-6,
                               equal_nan=True)


def test_interquartile_mean_se_is_scipys_trimmed_stde():
    rng = np.random.default_rng(5)
    cube = rng.standard_cauchy((20, 6, 7)).astype(np.float32)  # heavy tails: big trims
    r = skystack.combine(cube, backend="cpu", method="mean", reject="percentile", plow=25.0,
                         phigh=25.0, uncertainty="scatter")
    flat = cube.astype(np.float64).reshape(20, -1)  # trimmed_stde takes at most 2-D
    expected = np.asarray(mstats.trimmed_stde(flat, limits=(0.25, 0.25), axis=0))
    np.testing.assert_allclose(r.uncertainty.array, expected.reshape(6, 7), rtol=1e-5)


def test_weighted_se_takes_the_unweighted_winsorized_inflation():
    cube = make_stack(n=15, shape=(8, 11), seed=3)
    w = np.linspace(0.5, 2.0, 15)
    opts = dict(reject="minmax", nlow=2, nhigh=2, uncertainty="scatter")
    r = skystack.combine(cube, backend="cpu", method="mean", weights=list(w), **opts)
    keep = keep_mask(cube, "minmax", nlow=2, nhigh=2)
    x = np.where(keep, cube.astype(np.float64), np.nan)
    wk = np.where(keep, w[:, None, None], 0.0)
    v1, v2 = wk.sum(0), (wk**2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):  # the pixel with no valid value
        mean = np.nansum(wk * np.nan_to_num(x), 0) / v1
        s_w = np.sqrt((wk * np.nan_to_num(x - mean) ** 2).sum(0) / (v1 - v2 / v1))
        weighted_se = s_w * np.sqrt(v2) / v1
        h = keep.sum(0)
        naive = np.sqrt(np.nansum((x - np.nansum(x, 0) / h) ** 2, 0) / (h - 1)) / np.sqrt(h)
    assert np.isfinite(naive).sum() > 80
    expected = weighted_se * _winsorized_se_by_sorting(cube, keep) / naive
    np.testing.assert_allclose(r.uncertainty.array, expected, rtol=1e-5, equal_nan=True)


# --- model and propagate after rank trims (skystack.trim_efficiency) ------------------------

def _clamped_moment(z, p, a, b):
    return min(max(z, a), b) ** p * stats.norm.pdf(z)


def test_gaussian_trimmed_mean_variance_is_the_winsorized_variance_by_quadrature():
    for a_lo, a_hi in [(0.25, 0.25), (0.1, 0.1), (0.2, 0.0), (0.05, 0.3)]:
        a = stats.norm.ppf(a_lo) if a_lo > 0 else -np.inf
        b = stats.norm.ppf(1 - a_hi) if a_hi > 0 else np.inf
        m1 = integrate.quad(_clamped_moment, -np.inf, np.inf, args=(1, a, b))[0]
        m2 = integrate.quad(_clamped_moment, -np.inf, np.inf, args=(2, a, b))[0]
        expected = (m2 - m1**2) / (1 - a_lo - a_hi) ** 2
        assert gaussian_trimmed_mean_variance(a_lo, a_hi) == pytest.approx(expected, rel=1e-6)
    assert gaussian_trimmed_mean_variance(0.0, 0.0) == 1.0
    assert gaussian_trimmed_mean_variance(0.25, 0.25) == pytest.approx(1.1952, abs=1e-4)


GAIN, RDNOISE = 2.0, 6.0  # e-/ADU, e-


def _poisson_frames(n, rng, level=1000.0, with_sigma=False):
    frames = []
    for _ in range(n):
        e = rng.poisson(level * GAIN, (100, 200)) + rng.normal(0, RDNOISE, (100, 200))
        data = (e / GAIN).astype(np.float32)
        sigma = np.full(data.shape, math.sqrt(level / GAIN + (RDNOISE / GAIN) ** 2), np.float32)
        frames.append(CCDData(data, unit="adu", meta={"GAIN": GAIN, "RDNOISE": RDNOISE},
                              uncertainty=StdDevUncertainty(sigma) if with_sigma else None))
    return frames


# Measured rms(UNCERT) / true SE of the model before (var / COUNT) -> now: IQ mean of 20
# 1.30 -> 1.00, minmax 2/2 of 20 1.09 -> 1.00, minmax 1/1 of 5 1.21 -> 1.01, percentile 10/30
# of 20 1.21 -> 1.01.
@pytest.mark.parametrize("n,reject,opts", [
    (20, "percentile", dict(plow=25.0, phigh=25.0)),
    (20, "percentile", dict(plow=10.0, phigh=30.0)),
    (20, "minmax", dict(nlow=2, nhigh=2)),
    (5, "minmax", dict(nlow=1, nhigh=1)),
    # Value clips: var / COUNT times skystack.clip_efficiency's factor (measured with -> without
    # it: sigclip 2 sigma 0.989 -> 0.794, winsor 2 sigma 1.010 -> 0.854, pclip 0.996 -> 0.912,
    # esd 0.996 -> 0.978, ccdclip 2 sigma 0.988 -> 0.869; propagate the same).
    (20, "sigclip", dict(sigma=2.0)),
    (20, "winsor", dict(sigma=2.0)),
    (20, "pclip", {}),
    (20, "esd", {}),
    (20, "ccdclip", dict(gain=GAIN, rdnoise=RDNOISE, sigma=2.0)),
])
@pytest.mark.parametrize("source", ["model", "propagate"])
def test_model_and_propagated_uncertainty_of_rank_trims(n, reject, opts, source):
    rng = np.random.default_rng(n + len(reject))
    frames = _poisson_frames(n, rng, with_sigma=source == "propagate")
    ratio = _uncert_over_true_se(frames, reject, dict(opts, uncertainty=source))
    # The model's UNCERT is nearly noise-free: only the empirical SD's 0.5 % sampling error
    # (and, for value clips, the factor's own: 0.4 %).
    assert abs(ratio - 1.0) < 0.03, f"{source} {reject} {opts} N={n}: {ratio:.3f}"


def _shifted_stack_frames(tmp_path, n_frames=10, rows=300, cols=120, step=12, sigma=5.0,
                          header=None):
    """Frames of pure noise about 1000 ADU, each shifted by ``step`` whole pixels along x (no
    resampling smoothing), so that the stack's coverage runs from 1 to ``n_frames`` in bands
    of ``step`` columns."""
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = np.random.default_rng(11)
    paths = []
    for k in range(n_frames):
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [150.0, 2.0]
        w.wcs.crpix = [cols / 2 + 0.5 - step * k, rows / 2 + 0.5]
        w.wcs.cdelt = [-1 / 3600, 1 / 3600]
        h = w.to_header()
        h.update(header or {})
        data = rng.normal(1000.0, sigma, (rows, cols)).astype(np.float32)
        p = tmp_path / f"s{k}.fits"
        fits.PrimaryHDU(data, header=h).writeto(p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("source", ["scatter", "model"])
@pytest.mark.parametrize("opts", [dict(reject="sigclip", sigma_low=5.0, sigma_high=3.0,
                                       spread="mad"),
                                  dict(reject="sigclip", sigma=2.0)])
def test_stack_uncertainty_follows_each_pixels_coverage(tmp_path, source, opts):
    # The clip's factor depends on the number of valid values (MAD 5/3 sigma: 1.30 at 3, 1.05
    # at 10 frames); a stack's edges have fewer. Truth per coverage: the scatter of the stacked
    # pure-noise values across the pixels of that coverage.
    gain = 4.0  # the model's sigma at 1000 ADU: sqrt(1000 / 4 + (20 / 4)^2) = 16.6 ADU
    sigma = math.sqrt(1000.0 / gain + (20.0 / gain) ** 2)
    paths = _shifted_stack_frames(tmp_path, sigma=sigma,
                                  header={"GAIN": gain, "RDNOISE": 20.0, "BIASSUB": True})
    r = skystack.stack(paths, method="mean", uncertainty=source, backend="cpu", **opts)
    assert r.meta["UNCMETH"] == source
    unc = np.asarray(r.uncertainty.array, np.float64)
    value = np.asarray(r.data, np.float64)
    for n in (3, 4, 6, 10):
        sel = (r.coverage == n) & np.isfinite(unc)
        assert sel.sum() > 2000
        ratio = math.sqrt(np.mean(unc[sel] ** 2)) / value[sel].std(ddof=1)
        assert abs(ratio - 1.0) < 0.06, f"{source} {opts} coverage {n}: {ratio:.3f}"
