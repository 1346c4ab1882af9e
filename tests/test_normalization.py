"""Scale and zero normalisation and header-driven weights against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clipped_stats

import skystack
from tests.reference import reduce_kept


@pytest.fixture
def frames(tmp_path):
    rng = np.random.default_rng(3)
    paths, cube = [], []
    for k, (gain, offset, t) in enumerate([(1.0, 0.0, 10.0), (1.3, 20.0, 13.0),
                                           (0.8, -15.0, 8.0), (1.1, 5.0, 11.0)]):
        data = (rng.normal(1000, 20, (40, 50)) * gain + offset).astype(np.float32)
        hdu = fits.PrimaryHDU(data)
        hdu.header["EXPTIME"] = t
        hdu.header["SKYVAR"] = 10.0 * (k + 1)
        hdu.header["SKYSIG"] = float(k + 1)
        p = tmp_path / f"s{k}.fits"
        hdu.writeto(p)
        paths.append(str(p))
        cube.append(data)
    return paths, np.stack(cube)


def test_scale_median(frames):
    paths, cube = frames
    med = np.median(cube.reshape(4, -1), axis=1)
    scale = (med[0] / med).astype(np.float32)
    expected = (cube * scale[:, None, None]).astype(np.float32)
    r = skystack.combine(paths, method="mean", scale="median", backend="cpu")
    np.testing.assert_allclose(r.data, reduce_kept(expected, np.isfinite(expected), "mean")[0],
                               rtol=1e-5)


def test_zero_mean_is_sigma_clipped(frames):
    paths, cube = frames
    means = np.array([sigma_clipped_stats(f, sigma=3, maxiters=5)[0] for f in cube])
    zero = (means[0] - means).astype(np.float32)
    expected = cube + zero[:, None, None]
    r = skystack.combine(paths, method="median", zero="mean", backend="cpu")
    np.testing.assert_allclose(r.data, np.median(expected, 0), rtol=1e-5)


def test_scale_and_zero_median(frames):
    paths, cube = frames
    med = np.median(cube.reshape(4, -1), axis=1)
    s = (med[0] / med).astype(np.float32)
    z = (med[0] - s.astype(np.float64) * med).astype(np.float32)
    expected = cube * s[:, None, None] + z[:, None, None]
    r = skystack.combine(paths, method="mean", scale="median", zero="median", backend="cpu")
    np.testing.assert_allclose(r.data, expected.astype(np.float64).mean(0), rtol=1e-5)


def test_scale_exposure(frames):
    paths, cube = frames
    t = np.array([10.0, 13.0, 8.0, 11.0])
    s = (t[0] / t).astype(np.float32)
    r = skystack.combine(paths, method="mean", scale="exposure", backend="cpu")
    np.testing.assert_allclose(r.data, (cube * s[:, None, None]).astype(np.float64).mean(0),
                               rtol=1e-5)


@pytest.mark.parametrize("spec,weights", [("exptime", [10.0, 13.0, 8.0, 11.0]),
                                          ("invvar:SKYVAR", [1 / 10, 1 / 20, 1 / 30, 1 / 40]),
                                          ("noise:SKYSIG", [1.0, 1 / 4, 1 / 9, 1 / 16]),
                                          ("1,2,3,4", [1, 2, 3, 4])])
def test_weights_from_headers_and_lists(frames, spec, weights):
    paths, cube = frames
    r = skystack.combine(paths, method="mean", weights=spec, backend="cpu")
    np.testing.assert_allclose(r.data, np.average(cube, axis=0, weights=weights), rtol=1e-5)
    assert r.meta["WEIGHTS"] in (spec, "list")


def test_weights_file(frames, tmp_path):
    paths, cube = frames
    (tmp_path / "w.txt").write_text("1\n1\n2\n2\n")
    r = skystack.combine(paths, method="sum", weights=f"@{tmp_path / 'w.txt'}", backend="cpu")
    np.testing.assert_allclose(r.data, (cube * np.array([1, 1, 2, 2])[:, None, None]).sum(0),
                               rtol=1e-5)


@pytest.mark.parametrize("value", [1e308, 2e6, -5.0, 0.0, "NaN", "inf", "long"])
@pytest.mark.parametrize("option", [{"scale": "exposure"}, {"weights": "exptime"}])
def test_unusable_exptime_is_a_one_line_error_naming_the_file(frames, value, option):
    """A corrupt EXPTIME never becomes a scale or weight: 1e308 (finite, but no exposure lasts
    longer than 1e6 s) would overflow the sum of weights, a negative one flip the frame."""
    paths, _ = frames
    with fits.open(paths[2], mode="update") as hdul:
        hdul[0].header["EXPTIME"] = value
    with pytest.raises(skystack.SkystackError, match=r"^[^\n]*s2\.fits: EXPTIME") as err:
        skystack.combine(paths, method="mean", backend="cpu", **option)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", [1e308, "NaN", -5.0, "long"])
def test_corrupt_exptime_is_left_out_of_the_provenance(frames, value):
    """Without exposure scaling or weights a corrupt EXPTIME does not matter to the pixels: the
    combine runs (1e308 and NaN used to end in a traceback from the DATE-END and EXPTIME
    cards), and the output carries no EXPTIME rather than a wrong one."""
    paths, cube = frames
    with fits.open(paths[1], mode="update") as hdul:
        hdul[0].header["EXPTIME"] = value
    r = skystack.combine(paths, method="mean", backend="cpu")
    np.testing.assert_allclose(r.data, cube.astype(np.float64).mean(0), rtol=1e-5)
    assert "EXPTIME" not in r.meta
