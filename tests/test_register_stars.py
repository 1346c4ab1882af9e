"""Star detection and measurement against known truth (skystack.register.stars)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from skystack.demo_data import moffat_stars
from skystack.register import measure_frame, measure_stars
from skystack.register.stars import EDGE
from tests.test_register_synth import TrueMap, catalogue, gaussian_stars, render_frame


def _grid_stars(shape, n_side, border=30):
    ys, xs = np.meshgrid(np.linspace(border, shape[0] - border, n_side),
                         np.linspace(border, shape[1] - border, n_side), indexing="ij")
    rng = np.random.default_rng(11)
    # Sub-pixel phases vary from star to star.
    return xs.ravel() + rng.uniform(-0.5, 0.5, xs.size), ys.ravel() + rng.uniform(-0.5, 0.5,
                                                                                 xs.size)


def _noisy(image, rng, sky=100.0, read_noise=3.0):
    return (rng.poisson(image + sky) + rng.normal(0, read_noise, image.shape)).astype(np.float32)


@pytest.mark.parametrize("fwhm", [2.5, 3.0, 5.0])
def test_fwhm_of_gaussian_stars(fwhm):
    shape = (300, 300)
    x, y = _grid_stars(shape, 6)
    img = _noisy(gaussian_stars(shape, x, y, np.full(x.size, 2e5), fwhm, half=15),
                 np.random.default_rng(1))
    stars = measure_stars(img)
    assert stars.n_stars == x.size
    assert abs(stars.median_fwhm / fwhm - 1) < 0.03
    assert stars.median_ellipticity < 0.03


@pytest.mark.parametrize("fwhm", [3.0, 4.5])
def test_fwhm_of_moffat_stars(fwhm):
    shape = (300, 300)
    x, y = _grid_stars(shape, 6)
    img = _noisy(moffat_stars(shape, x, y, np.full(x.size, 2e5), fwhm, beta=3.5, oversample=5),
                 np.random.default_rng(2))
    stars = measure_stars(img)
    assert stars.n_stars == x.size
    assert abs(stars.median_fwhm / fwhm - 1) < 0.05


def test_ellipticity_and_orientation_of_elongated_stars():
    shape = (300, 300)
    x, y = _grid_stars(shape, 6)
    major, minor, theta = 5.0, 3.5, math.radians(30)
    img = _noisy(gaussian_stars(shape, x, y, np.full(x.size, 3e5), major, minor, theta, half=15),
                 np.random.default_rng(3))
    stars = measure_stars(img)
    assert stars.n_stars == x.size
    assert abs(stars.median_ellipticity - (1 - minor / major)) < 0.02
    assert abs(stars.median_fwhm / math.sqrt(major * minor) - 1) < 0.03
    assert abs(np.median(stars.theta) - theta) < 0.03


def test_positions_background_and_noise():
    rng = np.random.default_rng(4)
    truth = TrueMap((400, 400))
    cat = catalogue(150, truth.shape, rng, margin=0)
    img = render_frame(truth, cat, rng, sky=200.0, read_noise=5.0)
    stars = measure_stars(img)
    assert abs(stars.background - 200.0) < 1.0
    assert abs(stars.background_rms / math.sqrt(200.0 + 25.0) - 1) < 0.05
    d, _ = cKDTree(np.c_[cat[0], cat[1]]).query(np.c_[stars.x, stars.y])
    assert (d < 1.0).all()  # every detection is a real star
    inner = (stars.flags & EDGE) == 0
    bright = np.flatnonzero(inner)[:50]
    assert np.median(d[bright]) < 0.02 and np.percentile(d[bright], 90) < 0.05
    assert stars.n_stars > 100
    assert np.all(np.diff(stars.flux) <= 0)  # brightest first


def test_hot_pixels_and_cosmic_rays_are_rejected():
    rng = np.random.default_rng(5)
    truth = TrueMap((400, 400))
    cat = catalogue(60, truth.shape, rng, margin=0, flux_range=(2e4, 2e5))
    # 0.1 % hot pixels (as the demo camera), 40 cosmic-ray hits and tracks.
    img = render_frame(truth, cat, rng, hot_pixels=160, cosmic_rays=40)
    stars = measure_stars(img)
    d, _ = cKDTree(np.c_[cat[0], cat[1]]).query(np.c_[stars.x, stars.y])
    assert (d < 1.0).all(), f"{(d >= 1).sum()} detections are not stars"
    # Nearly all stars found (a few may sit on a cosmic ray or a neighbour).
    assert stars.n_stars >= 0.9 * 60
    assert abs(stars.median_fwhm / 3.0 - 1) < 0.06


def test_frames_without_stars():
    rng = np.random.default_rng(6)
    for img in (rng.normal(100, 5, (128, 128)).astype(np.float32),
                np.zeros((64, 64), np.float32),
                np.full((64, 64), np.nan, np.float32),
                np.full((64, 64), 7, np.uint16)):
        stars = measure_stars(img)
        assert stars.n_stars == 0
        assert math.isnan(stars.median_fwhm)
        assert stars.for_matching()[0].size == 0


def test_nan_regions_and_big_endian_input():
    rng = np.random.default_rng(7)
    truth = TrueMap((256, 256))
    cat = catalogue(60, truth.shape, rng, margin=0, flux_range=(2e4, 2e5))
    img = render_frame(truth, cat, rng)
    img[:, :40] = np.nan
    stars = measure_stars(img.astype(">f4"))
    assert stars.n_stars > 30
    assert (stars.x > 38).all()
    d, _ = cKDTree(np.c_[cat[0], cat[1]]).query(np.c_[stars.x, stars.y])
    assert (d < 1.0).all()


def test_binned_detection_of_a_large_frame():
    rng = np.random.default_rng(8)
    truth = TrueMap((1024, 1024))
    cat = catalogue(400, truth.shape, rng, margin=0)
    img = render_frame(truth, cat, rng, hot_pixels=200)
    full = measure_stars(img)
    binned = measure_stars(img, bin_above=1000)
    tree = cKDTree(np.c_[cat[0], cat[1]])
    for stars in (full, binned):
        d, _ = tree.query(np.c_[stars.x, stars.y])
        assert (d < 1.0).all()
        assert np.median(d) < 0.05
    assert binned.n_stars > 0.85 * full.n_stars
    assert abs(binned.median_fwhm - full.median_fwhm) < 0.05


def test_measure_frame_reads_any_source(tmp_path):
    from astropy.io import fits

    from skystack.io.inputs import load_frames

    rng = np.random.default_rng(9)
    truth = TrueMap((200, 240))
    img = render_frame(truth, catalogue(50, truth.shape, rng, margin=0), rng)
    path = tmp_path / "f.fits"
    fits.PrimaryHDU(np.clip(np.rint(img), 0, 65535).astype(np.uint16)).writeto(path)
    (frame,) = load_frames([str(path)])
    m = measure_frame(frame)
    ref = measure_stars(np.clip(np.rint(img), 0, 65535))
    assert m.label == "f.fits" and m.n_stars == ref.n_stars
    np.testing.assert_allclose(m.stars.x, ref.x)
