"""Star matching and transform fitting against known truth; registrations as WCS."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from skystack.demo_data import _reference_wcs
from skystack.register import (
    fit_transform,
    match_stars,
    measure_stars,
    registered_wcs,
    synthetic_wcs,
)
from skystack.register.wcs import reference_wcs
from tests.test_register_synth import TrueMap, catalogue, grid_error, render_frame

# name, frame shape, catalogue stars, catalogue margin (px), true map, model
CASES = [
    ("shift", (384, 384), 250, 100, dict(dx=17.37, dy=-9.81), "shift"),
    ("rotation 3 deg", (384, 448), 250, 100, dict(dx=-12.2, dy=21.6, theta_deg=3.0),
     "similarity"),
    ("rotation -2 deg, scale 1.02", (384, 384), 250, 100,
     dict(dx=6.4, dy=4.9, theta_deg=-2.0, scale=1.02), "similarity"),
    ("affine model", (384, 384), 250, 100, dict(dx=-3.3, dy=8.8, theta_deg=1.1), "affine"),
    ("distortion poly2", (448, 448), 400, 100, dict(dx=5.5, dy=-7.5, theta_deg=1.5, k2=2.0),
     "poly2"),
    ("distortion poly3", (448, 448), 450, 100,
     dict(dx=9.1, dy=3.7, theta_deg=-1.2, k2=1.0, k3=3.0), "poly3"),
    ("15 stars", (384, 384), 15, 0, dict(dx=14.3, dy=-11.2, theta_deg=2.5), "similarity"),
    ("crowded", (768, 768), 4000, 60, dict(dx=-23.7, dy=31.1, theta_deg=-2.8), "similarity"),
    ("meridian flip", (384, 384), 250, 100, dict(dx=4.0, dy=-6.0, theta_deg=180.4),
     "similarity"),
]


def _pair(shape, n, margin, truth_kw, seed, **render):
    rng = np.random.default_rng(seed)
    flux = (2e4, 3e5) if n < 50 else (3e3, 3e5)
    cat = catalogue(n, shape, rng, margin=margin, flux_range=flux)
    ref = render_frame(TrueMap(shape), cat, rng, hot_pixels=40, cosmic_rays=5, **render)
    truth = TrueMap(shape, **truth_kw)
    frame = render_frame(truth, cat, rng, hot_pixels=40, cosmic_rays=5, **render)
    return ref, frame, truth, cat


@pytest.mark.parametrize("name, shape, n, margin, kw, model", CASES, ids=[c[0] for c in CASES])
def test_registration_error_against_truth(name, shape, n, margin, kw, model):
    ref, frame, truth, cat = _pair(shape, n, margin, kw, seed=len(name))
    sr, sf = measure_stars(ref), measure_stars(frame)
    reg = match_stars(*sf.for_matching(), *sr.for_matching(), shape, model=model)
    assert reg.ok, reg.reason
    assert reg.model == model
    err = grid_error(reg.transform, truth)
    assert err.mean() <= 0.1, f"{name}: mean error {err.mean():.3f} px"
    assert err.max() <= 0.3, f"{name}: worst error {err.max():.3f} px"
    assert reg.rms < 0.2 and reg.n_matched >= min(10, sf.n_stars - 2)
    # Every pair is a star in both frames (no hot pixel or cosmic ray among them), the same one
    # (up to the odd blend of two close stars).
    xf, yf = sf.for_matching()
    xr, yr = sr.for_matching()
    fx, fy = truth.forward(cat[0], cat[1])
    df, jf = cKDTree(np.c_[fx, fy]).query(np.c_[xf, yf][reg.pairs[:, 0]])
    dr, jr = cKDTree(np.c_[cat[0], cat[1]]).query(np.c_[xr, yr][reg.pairs[:, 1]])
    assert (df < 3).all() and (dr < 3).all()
    assert ((df < 1) & (dr < 1) & (jf == jr)).mean() >= 0.97


def test_no_stars_few_stars_and_unrelated_fields_fail_with_a_reason():
    shape = (256, 256)
    rng = np.random.default_rng(3)
    cat = catalogue(80, shape, rng, margin=0)
    ref = measure_stars(render_frame(TrueMap(shape), cat, rng))
    empty = measure_stars(rng.normal(100, 5, shape).astype(np.float32))
    reg = match_stars(*empty.for_matching(), *ref.for_matching(), shape)
    assert not reg.ok and reg.reason == "0 stars detected (need >= 4)"
    assert reg.transform is None
    three = match_stars([10.0, 50.0, 90.0], [10.0, 80.0, 20.0], *ref.for_matching(), shape)
    assert not reg.ok and three.reason == "3 stars detected (need >= 4)"
    reg = match_stars(*ref.for_matching(), [], [], shape)
    assert not reg.ok and "reference has 0 stars" in reg.reason
    other = measure_stars(render_frame(TrueMap(shape), catalogue(80, shape, rng, margin=0), rng))
    reg = match_stars(*other.for_matching(), *ref.for_matching(), shape)
    assert not reg.ok and "no consistent triangle match" in reg.reason
    with pytest.raises(ValueError, match="unknown model"):
        match_stars(*ref.for_matching(), *ref.for_matching(), shape, model="spline")


def test_too_few_matches_for_the_model_fall_back_with_a_reason():
    shape = (384, 384)
    ref, frame, truth, _ = _pair(shape, 10, 0, dict(dx=5.0, dy=3.0, theta_deg=1.0), seed=9)
    sr, sf = measure_stars(ref), measure_stars(frame)
    reg = match_stars(*sf.for_matching(), *sr.for_matching(), shape, model="poly3")
    assert reg.ok
    assert reg.model in ("affine", "poly2") and "poly3 needs" in reg.reason
    assert grid_error(reg.transform, truth).mean() < 0.3


def _sip_reference(shape):
    w = _reference_wcs(shape)
    header = w.to_header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header["A_ORDER"] = header["B_ORDER"] = 2
    header["A_2_0"], header["B_0_2"] = 2e-6, -3e-6
    return WCS(header)


@pytest.mark.parametrize("model", ["shift", "similarity", "affine", "poly2", "poly3"])
@pytest.mark.parametrize("ref_kind", ["synthetic", "header", "sip"])
def test_registered_wcs_reproduces_the_transform(model, ref_kind):
    shape = (300, 400)
    truth = TrueMap(shape, dx=12.3, dy=-7.1, theta_deg=2.5, scale=1.01, k2=1.5, k3=2.0)
    yy, xx = np.mgrid[0:300:9, 0:400:9]
    xf, yf = xx.ravel().astype(float), yy.ravel().astype(float)
    t = fit_transform(model, xf, yf, *truth.inverse(xf, yf), shape)
    ref = {"synthetic": synthetic_wcs(shape), "header": _reference_wcs(shape),
           "sip": _sip_reference(shape)}[ref_kind]
    wcs = registered_wcs(t, ref, shape)
    assert (wcs.sip is not None) == (model in ("poly2", "poly3"))
    # The reference grid is the reference's linear WCS (its distortion, if any, dropped).
    grid = ref if ref.sip is None else _reference_wcs(shape)  # the SIP reference's linear part
    for w in (wcs, WCS(wcs.to_header(relax=True))):  # also through a FITS header
        px, py = grid.world_to_pixel_values(*w.pixel_to_world_values(xf, yf))
        tx, ty = t(xf, yf)
        assert np.abs(px - tx).max() < 1e-6 and np.abs(py - ty).max() < 1e-6


def test_reference_wcs_of_frames_with_and_without_celestial_wcs():
    from astropy.io import fits

    from skystack.io.inputs import load_frames

    shape = (200, 300)
    hdr = fits.Header({"XPIXSZ": 4.5, "FOCALLEN": 928.0})
    (plain,) = load_frames([fits.PrimaryHDU(np.zeros(shape, np.float32), header=hdr)])
    w, source = reference_wcs(plain)
    scale = 206.264806 * 4.5 / 928.0
    assert "synthetic" in source and "XPIXSZ/FOCALLEN" in source
    assert math.isclose(abs(w.pixel_scale_matrix[0, 0]) * 3600, scale, rel_tol=1e-12)
    np.testing.assert_allclose(w.wcs.crpix, [150.5, 100.5])
    wcs_hdr = _sip_reference(shape).to_header(relax=True)
    (with_wcs,) = load_frames([fits.PrimaryHDU(np.zeros(shape, np.float32), header=wcs_hdr)])
    w2, source2 = reference_wcs(with_wcs)
    assert source2 == "header" and w2.sip is None
    np.testing.assert_allclose(w2.wcs.crval, _reference_wcs(shape).wcs.crval)
