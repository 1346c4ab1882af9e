"""Debayering against colour-demosaicing (an independent implementation) and against truth."""

import numpy as np
import pytest
from colour_demosaicing import (
    demosaicing_CFA_Bayer_bilinear,
    demosaicing_CFA_Bayer_Malvar2004,
    demosaicing_CFA_Bayer_Menon2007,
    mosaicing_CFA_Bayer,
)

from skystack.colour import PATTERNS, debayer
from skystack.errors import SkystackError

REFERENCE = {"bilinear": (demosaicing_CFA_Bayer_bilinear, 1),
             "mhc": (demosaicing_CFA_Bayer_Malvar2004, 2),
             # same edge handling as colour-demosaicing's Menon2007: every pixel compared
             "menon": (demosaicing_CFA_Bayer_Menon2007, 0)}


def _random_mosaic(seed=0, shape=(40, 36)):
    return np.random.default_rng(seed).uniform(100, 5000, shape)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_interior_matches_colour_demosaicing(pattern, method):
    cfa = _random_mosaic(hash(pattern) % 100)
    reference, border = REFERENCE[method]
    want = np.moveaxis(reference(cfa, pattern), -1, 0)
    got = debayer(cfa.astype(np.float32), pattern, method)
    rows, cols = cfa.shape
    inner = (slice(None), slice(border, rows - border), slice(border, cols - border))
    np.testing.assert_allclose(got[inner], want[inner], rtol=2e-6, atol=1e-3)
    # measured photosites are kept exactly (both methods interpolate only missing colours)
    for ch, (r, c) in zip(pattern, ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True):
        np.testing.assert_array_equal(got["RGB".index(ch), r::2, c::2],
                                      cfa[r::2, c::2].astype(np.float32))


def _smooth_colour(shape=(48, 52)):
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    return np.stack([1000 + 3 * x + 2 * y, 2000 - x + 4 * y, 500 + 0.5 * x - y], axis=-1)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", ["bilinear", "mhc", "menon"])
def test_linear_colour_image_recovered(pattern, method):
    truth = _smooth_colour()
    cfa = mosaicing_CFA_Bayer(truth, pattern)
    got = debayer(cfa, pattern, method)
    # interior (edges: the mirror makes a linear ramp's edge pixels off by the ramp's slope;
    # menon's chain of 1-D filters carries that 6 pixels in, as colour-demosaicing's does)
    b = 6 if method == "menon" else 2
    np.testing.assert_allclose(got[:, b:-b, b:-b], np.moveaxis(truth, -1, 0)[:, b:-b, b:-b],
                               rtol=1e-5)


def test_constant_colour_exact_to_the_edges():
    truth = np.ones((20, 22, 3)) * np.array([300.0, 700.0, 150.0])
    for method in ("bilinear", "mhc", "menon"):
        got = debayer(mosaicing_CFA_Bayer(truth, "GRBG"), "GRBG", method)
        np.testing.assert_allclose(got, np.moveaxis(truth, -1, 0), rtol=1e-6)


def test_nan_photosite_does_not_spread():
    truth = np.ones((16, 16, 3)) * np.array([300.0, 700.0, 150.0])
    cfa = mosaicing_CFA_Bayer(truth, "RGGB")
    cfa[6, 6] = np.nan  # a red photosite
    for method in ("bilinear", "mhc", "menon"):
        got = debayer(cfa, "RGGB", method)
        assert np.isnan(got[0, 6, 6])  # its own (measured) colour is unknown
        np.testing.assert_allclose(got[1:, 6, 6], [700.0, 150.0], rtol=1e-6)
        finite = np.isfinite(got)
        assert finite.sum() == got.size - 1
        np.testing.assert_allclose(got[0][finite[0]], 300.0, rtol=1e-6)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(SkystackError, match="debayer method"):
        debayer(np.zeros((4, 4)), "RGGB", "vng")
    with pytest.raises(SkystackError, match="Bayer pattern"):
        debayer(np.zeros((4, 4)), "RGBG")
    with pytest.raises(SkystackError, match="2-D"):
        debayer(np.zeros((4, 4, 3)), "RGGB")


def test_menon_follows_edges_better_than_bilinear():
    # A grey scene with vertical and horizontal steps: interpolating across a step makes
    # zippers and false colour; Menon's directional choice interpolates along it.
    truth = np.full((32, 32), 200.0)
    truth[:, 15:] = 3000.0
    truth[20:, :] += 1500.0
    grey = np.repeat(truth[..., None], 3, axis=-1)
    cfa = mosaicing_CFA_Bayer(grey, "RGGB")
    inner = (slice(None), slice(3, -3), slice(3, -3))
    errors = {m: np.abs(debayer(cfa, "RGGB", m) - np.moveaxis(grey, -1, 0))[inner].sum()
              for m in ("bilinear", "menon")}
    assert errors["menon"] < 0.35 * errors["bilinear"], errors  # measured: 0.24
