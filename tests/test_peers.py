"""Agreement with ccdproc.combine where its semantics match skystack's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import skystack
from tests.reference import make_stack

ccdproc = pytest.importorskip("ccdproc")


def _ccds(cube):
    from astropy.nddata import CCDData

    return [CCDData(frame, unit="adu") for frame in cube]


@pytest.fixture
def cube():
    return make_stack(n=11, shape=(30, 40), seed=42, nan_fraction=0, dead_pixels=False)


def _combine_ccdproc(cube, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ccdproc.combine(_ccds(cube), dtype=np.float64, **kw)


def test_median(cube):
    ref = _combine_ccdproc(cube, method="median")
    ours = skystack.combine(cube, method="median", backend="cpu")
    np.testing.assert_allclose(ours.data, ref.data, rtol=1e-6)


def test_average(cube):
    ref = _combine_ccdproc(cube, method="average")
    ours = skystack.combine(cube, method="mean", backend="cpu")
    np.testing.assert_allclose(ours.data, ref.data, rtol=1e-6)
    # ccdproc's standard error uses the ddof=0 std; skystack's the ddof=1 sample std.
    n = cube.shape[0]
    np.testing.assert_allclose(ours.uncertainty.array,
                               ref.uncertainty.array * np.sqrt(n / (n - 1)), rtol=1e-5)


def test_sum(cube):
    ref = _combine_ccdproc(cube, method="sum")
    ours = skystack.combine(cube, method="sum", backend="cpu")
    np.testing.assert_allclose(ours.data, ref.data, rtol=1e-6)


def test_sigma_clipped_average(cube):
    ref = _combine_ccdproc(cube, method="average", sigma_clip=True, sigma_clip_low_thresh=2.5,
                           sigma_clip_high_thresh=2.5, sigma_clip_func=np.ma.median,
                           sigma_clip_dev_func=np.ma.std)
    # ccdproc clips once with median/std: skystack's sigclip with one iteration.
    ours = skystack.combine(cube, method="mean", reject="sigclip", sigma=2.5, maxiters=1,
                            backend="cpu")
    np.testing.assert_allclose(ours.data, ref.data, rtol=1e-5)
    np.testing.assert_array_equal(ours.mask, ref.mask)


def test_clip_extrema(cube):
    ref = _combine_ccdproc(cube, method="average", clip_extrema=True, nlow=1, nhigh=2)
    ours = skystack.combine(cube, method="mean", reject="minmax", nlow=1, nhigh=2,
                            backend="cpu")
    np.testing.assert_allclose(ours.data, ref.data, rtol=1e-6)


def test_minmax_clip_is_range(cube):
    ref = _combine_ccdproc(cube, method="average", minmax_clip=True, minmax_clip_min=90,
                           minmax_clip_max=2000)
    ours = skystack.combine(cube, method="mean", reject="range", low=90, high=2000,
                            backend="cpu")
    np.testing.assert_allclose(ours.data, ref.data, rtol=1e-6, equal_nan=True)


def test_weighted_average(cube):
    w = np.linspace(1, 2, cube.shape[0])
    ref = _combine_ccdproc(cube, method="average", weights=w)
    ours = skystack.combine(cube, method="mean", weights=list(w), backend="cpu")
    np.testing.assert_allclose(ours.data, ref.data, rtol=1e-6)
