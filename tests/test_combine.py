"""Every method and rejection against independent references, on stacks with outliers and NaNs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.stats import sigma_clip

import skystack
from skystack.backends import get_backend
from skystack.io.inputs import load_frames
from skystack.pipeline import ArraySink, combine_frames
from tests.reference import keep_mask, make_stack, reduce_kept

METHODS = ["mean", "median", "sum", "min", "max"]
REJECTIONS = [
    ("none", {}),
    ("sigclip", dict(center="median", spread="std", sigma_low=3.0, sigma_high=3.0, maxiters=5)),
    ("sigclip", dict(center="mean", spread="std", sigma_low=2.5, sigma_high=2.0, maxiters=0)),
    ("sigclip", dict(center="median", spread="mad", sigma_low=4.0, sigma_high=3.0, maxiters=1)),
    ("sigclip", dict(center="mean", spread="mad", sigma_low=3.0, sigma_high=3.0, maxiters=3)),
    ("minmax", dict(nlow=1, nhigh=2)),
    ("range", dict(low=80.0, high=1000.0)),
    ("percentile", dict(plow=10.0, phigh=20.0)),
]


def _check(result, cube, reject, opts, method, weights=None, raw=None):
    keep = keep_mask(cube, reject, raw=raw, **opts)
    # Range rejection makes values invalid rather than trimming them: nothing winsorized.
    value, unc, count = reduce_kept(cube, keep, method, weights,
                                    valid=keep if reject == "range" else None)
    np.testing.assert_array_equal(result.count, count)
    np.testing.assert_array_equal(np.isnan(result.data), np.isnan(value))
    rtol = 1e-6 if method in ("median", "min", "max") else 1e-5
    np.testing.assert_allclose(result.data, value, rtol=rtol, atol=1e-4, equal_nan=True)
    # After a value clip the mean's UNCERT is the winsorized SE times the header's UNCCLIP
    # (skystack.clip_efficiency; its value is tested against ground truth in
    # test_uncertainty_rejection.py).
    unc = unc * result.meta.get("UNCCLIP", 1.0)
    np.testing.assert_allclose(result.uncertainty.array, unc, rtol=1e-4, atol=1e-4,
                               equal_nan=True)
    np.testing.assert_array_equal(result.mask, count == 0)


@pytest.mark.parametrize("reject,opts", REJECTIONS)
@pytest.mark.parametrize("method", METHODS)
def test_against_reference(backend, method, reject, opts):
    cube = make_stack(n=15, seed=hash((method, reject)) % 2**32)
    result = skystack.combine(cube, method=method, reject=reject, backend=backend,
                              max_tile_rows=5, **opts)
    _check(result, cube, reject, opts, method)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 25, 64, 130])
def test_median_equals_numpy(backend, n):
    """np.nanmedian to float32 rounding, for network sizes from trivial to large."""
    cube = make_stack(n=n, shape=(9, 31), seed=n, dead_pixels=False)
    result = skystack.combine(cube, method="median", backend=backend)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning) if np.isnan(cube).all(0).any() \
            else _nullcontext():
        expected = np.nanmedian(cube, axis=0)
    np.testing.assert_allclose(result.data, expected.astype(np.float32), rtol=1e-7,
                               equal_nan=True)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("center,spread", [("median", "std"), ("mean", "std"),
                                           ("median", "mad"), ("mean", "mad")])
@pytest.mark.parametrize("maxiters", [0, 1, 5])
def test_sigclip_kept_values_equal_astropy(backend, center, spread, maxiters):
    """Same kept values as astropy.stats.sigma_clip, incl. values re-admitted by widening bounds."""
    cube = make_stack(n=21, shape=(40, 40), seed=maxiters, outlier_fraction=0.08)
    clipped = sigma_clip(cube, sigma_lower=2.0, sigma_upper=2.5, cenfunc=center,
                         stdfunc="std" if spread == "std" else "mad_std",
                         maxiters=None if maxiters == 0 else maxiters, axis=0)
    result = skystack.combine(cube, method="mean", reject="sigclip", center=center,
                              spread=spread, sigma_low=2.0, sigma_high=2.5, maxiters=maxiters,
                              backend=backend)
    np.testing.assert_array_equal(result.count, (~clipped.mask).sum(0))
    expected = clipped.mean(axis=0).filled(np.nan)
    np.testing.assert_allclose(result.data, expected, rtol=1e-5, equal_nan=True)


def test_sigma_sets_both_thresholds():
    cube = make_stack(seed=3)
    a = skystack.combine(cube, method="mean", reject="sigclip", sigma=2.0, backend="cpu")
    b = skystack.combine(cube, method="mean", reject="sigclip", sigma_low=2.0, sigma_high=2.0,
                         backend="cpu")
    np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("method", ["mean", "sum"])
@pytest.mark.parametrize("reject,opts", [("none", {}), ("minmax", dict(nlow=2, nhigh=2)),
                                         ("sigclip", dict(sigma_low=3.0, sigma_high=3.0))])
def test_weighted(backend, method, reject, opts):
    cube = make_stack(n=12, seed=7)
    weights = np.linspace(0.5, 3.0, 12)
    result = skystack.combine(cube, method=method, reject=reject, weights=list(weights),
                              backend=backend, **opts)
    _check(result, cube, reject, opts, method, weights=weights)


def test_weighted_ties_at_rank_cut():
    """With tied values at a minmax cut, exactly nlow/nhigh values are dropped."""
    cube = np.array([[[1.0]], [[1.0]], [[1.0]], [[5.0]], [[9.0]], [[9.0]]], np.float32)
    w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    r = skystack.combine(cube, method="mean", reject="minmax", nlow=1, nhigh=1, weights=w,
                         backend="cpu")
    assert r.count[0, 0] == 4
    # Ties are resolved in frame order: the first 1.0 of frame order is dropped... or kept;
    # either way the value is a weighted mean of {1, 1, 5, 9} with two of the 1-weights.
    assert 1.0 < r.data[0, 0] < 9.0


@pytest.mark.parametrize("method,reject", [("median", "none"), ("mean", "sigclip"),
                                           ("mean", "none"), ("max", "percentile")])
def test_tiled_equals_untiled(method, reject):
    """Row bands of one row, and column tiles, give the same result as one tile."""
    cube = make_stack(n=9, shape=(23, 41), seed=11)
    frames = load_frames(cube)
    opts = skystack.combine_options(method=method, reject=reject)
    engine = get_backend("cpu", threads=2)
    whole = ArraySink(cube.shape[1:])
    combine_frames(frames, opts, engine, [whole])
    for mem_limit, rows in [(opts.mem_limit, 1), (9 * 4 * 2 * 7 + 26 * 7, None)]:
        tiny = dataclasses.replace(opts, mem_limit=mem_limit)
        tiled = ArraySink(cube.shape[1:])
        stats = combine_frames(frames, tiny, engine, [tiled], max_tile_rows=rows)
        assert stats.n_tiles > 20
        np.testing.assert_array_equal(tiled.count, whole.count)
        np.testing.assert_array_equal(tiled.image, whole.image)
        np.testing.assert_array_equal(tiled.uncertainty, whole.uncertainty)
    engine.close()


def test_threads_do_not_change_results():
    cube = make_stack(n=11, shape=(64, 64), seed=5)
    one = skystack.combine(cube, method="mean", reject="sigclip", threads=1, backend="cpu")
    two = skystack.combine(cube, method="mean", reject="sigclip", threads=2, backend="cpu")
    np.testing.assert_array_equal(one.data, two.data)


def test_all_nan_pixel_is_nan_with_count_zero():
    cube = make_stack(seed=1)
    for method in METHODS:
        r = skystack.combine(cube, method=method, backend="cpu")
        assert np.isnan(r.data[0, 0]) and r.count[0, 0] == 0 and r.mask[0, 0]
        assert r.count[0, 1] == 1 and np.isfinite(r.data[0, 1])


def test_infinities_are_ignored():
    cube = np.full((4, 2, 2), 10.0, np.float32)
    cube[0, 0, 0] = np.inf
    cube[1, 0, 0] = -np.inf
    r = skystack.combine(cube, method="mean", backend="cpu")
    assert r.count[0, 0] == 2 and r.data[0, 0] == 10.0


def test_masked_ccddata_pixels_are_ignored():
    from astropy.nddata import CCDData

    cube = make_stack(n=5, seed=2, nan_fraction=0, dead_pixels=False)
    frames = []
    masks = np.zeros(cube.shape, bool)
    masks[0, 3, 4] = masks[2, 3, 4] = True
    for k in range(5):
        frames.append(CCDData(cube[k], unit="adu", mask=masks[k]))
    r = skystack.combine(frames, method="mean", backend="cpu")
    assert r.count[3, 4] == 3
    np.testing.assert_allclose(r.data[3, 4], cube[[1, 3, 4], 3, 4].astype(np.float64).mean(),
                               rtol=1e-6)
