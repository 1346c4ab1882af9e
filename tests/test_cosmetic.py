"""Cosmetic correction (skystack.cosmetics.interpolate): bad pixels and columns replaced from
their good neighbours, compared with a plain-Python reference of the rule and with the truth
of a smooth image; a good pixel never changes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits

from skystack.cosmetics.interpolate import MARGIN, cfa_step, interpolate_bad
from skystack.errors import SkystackError
from skystack.io.inputs import load_frames
from skystack.io.reader import Tile
from skystack.night.calibrate import Calibration, calibrated_frame
from skystack.night.run import run_night

SHAPE = (48, 64)
NOISE = 2.0


def _smooth(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    truth = 1000.0 + 3.0 * xx - 2.0 * yy + 50.0 * np.sin(xx / 9.0) * np.cos(yy / 11.0)
    return truth, (truth + rng.normal(0, NOISE, SHAPE)).astype(np.float32)


def _defects(rng, step=1):
    bad = np.zeros(SHAPE, bool)
    for r, c in rng.integers(2, (SHAPE[0] - 2, SHAPE[1] - 2), (30, 2)):
        bad[r, c] = True
    bad[:, 17] = True  # a whole bad column
    bad[10:30, 40] = True  # a partial one
    bad[5, 0] = bad[SHAPE[0] - 1, 33] = True  # at the edges
    return bad


def _reference(image, bad, step):
    """The documented rule, written out with plain loops."""
    src = image.astype(np.float64)
    out = image.astype(np.float64).copy()
    rows, cols = image.shape
    reach = MARGIN // step

    def good(r, c):
        return 0 <= r < rows and 0 <= c < cols and not bad[r, c] and np.isfinite(src[r, c])

    for r, c in zip(*np.nonzero(bad)):
        column = any(0 <= r + d < rows and bad[r + d, c] for d in (-step, step))
        value = np.nan
        if column:
            left = next((k for k in range(1, reach + 1) if good(r, c - k * step)), None)
            right = next((k for k in range(1, reach + 1) if good(r, c + k * step)), None)
            if left and right:
                value = (src[r, c - left * step] * right + src[r, c + right * step] * left) / (
                    left + right)
            elif left or right:
                value = src[r, c - left * step] if left else src[r, c + right * step]
        else:
            vals = [src[r + dy * step, c + dx * step] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                    if (dy or dx) and good(r + dy * step, c + dx * step)]
            if vals:
                value = np.median(vals)
        out[r, c] = value
    return out


def test_hot_pixels_and_columns_are_filled_within_the_noise_of_the_truth():
    truth, image = _smooth()
    bad = _defects(np.random.default_rng(1))
    corrupted = image.copy()
    corrupted[bad] = 60000.0  # hot (the values under the map are never used)
    result = corrupted.copy()
    n = interpolate_bad(result, bad)
    assert n == bad.sum()
    np.testing.assert_array_equal(result[~bad], image[~bad])  # good pixels never change
    np.testing.assert_allclose(result, _reference(corrupted, bad, 1), rtol=1e-6)
    # 1.5 px curvature over two pixels is below the noise; 5 sigma of one neighbour's noise:
    assert np.max(np.abs(result[bad] - truth[bad])) < 5 * NOISE


def test_cfa_frames_use_same_colour_neighbours():
    """On a Bayer mosaic (BAYERPAT) a red photosite is filled from red ones two pixels away;
    with step 1 the green neighbours would be mixed in."""
    truth, image = _smooth(2)
    pattern = np.tile(np.array([[1.0, 2.0], [2.0, 0.5]]), (SHAPE[0] // 2, SHAPE[1] // 2))
    truth, image = truth * pattern, (image * pattern).astype(np.float32)
    bad = np.zeros(SHAPE, bool)
    bad[10, 20] = bad[24, 30] = bad[31, 41] = True
    bad[:, 12] = True
    result = image.copy()
    interpolate_bad(result, bad, cfa_step(fits.Header([("BAYERPAT", "RGGB")])))
    np.testing.assert_allclose(result, _reference(image, bad, 2), rtol=1e-6)
    assert np.max(np.abs(result[bad] - truth[bad]) / pattern[bad]) < 6 * NOISE
    mono = image.copy()
    interpolate_bad(mono, bad, 1)
    assert np.max(np.abs(mono[bad] - truth[bad])) > 200  # why the step matters
    assert cfa_step(fits.Header()) == 1


def test_pixels_without_good_neighbours_stay_nan():
    image = np.ones((6, 6), np.float32)
    bad = np.zeros((6, 6), bool)
    bad[:, :] = True
    assert interpolate_bad(image, bad) == 0
    assert np.isnan(image).all()


def _calibrated(tmp_path, cosmetic, bayer=False):
    _, image = _smooth(3)
    bad = _defects(np.random.default_rng(4))
    raw = image + 100.0
    raw[bad] = 30000.0
    cards = [("BAYERPAT", "RGGB")] if bayer else []
    fits.PrimaryHDU(raw, header=fits.Header(cards)).writeto(tmp_path / "raw.fits")
    fits.PrimaryHDU(np.full(SHAPE, 100.0, np.float32)).writeto(tmp_path / "bias.fits")
    fits.PrimaryHDU(bad.astype(np.uint8)).writeto(tmp_path / "bpm.fits")
    raw_f, bias_f, bpm_f = load_frames([os.fspath(tmp_path / n) for n in
                                        ("raw.fits", "bias.fits", "bpm.fits")])
    cal = Calibration(bias=bias_f, badpix=bpm_f, cosmetic=cosmetic,
                      cfa_step=cfa_step(raw_f.header))
    return calibrated_frame(raw_f, cal), raw - 100.0, bad


@pytest.mark.parametrize("bayer", [False, True])
def test_calibration_interpolates_independently_of_the_tiling(tmp_path, bayer):
    frame, calibrated, bad = _calibrated(tmp_path, "interpolate", bayer)
    expected = np.where(bad, np.nan, calibrated).astype(np.float32)
    expected = _reference(expected, bad, 2 if bayer else 1)
    whole = np.empty(SHAPE, np.float32)
    frame.source.read(Tile(0, SHAPE[0], 0, SHAPE[1]), whole)
    np.testing.assert_allclose(whole, expected, rtol=1e-6)
    tiled = np.empty(SHAPE, np.float32)
    for r0 in range(0, SHAPE[0], 7):
        for c0 in range(0, SHAPE[1], 13):
            t = Tile(r0, min(r0 + 7, SHAPE[0]), c0, min(c0 + 13, SHAPE[1]))
            out = np.empty(t.shape, np.float32)
            frame.source.read(t, out)
            tiled[t.r0:t.r1, t.c0:t.c1] = out
    np.testing.assert_array_equal(tiled, whole)
    assert any("interpolated" in h for h in frame.header["HISTORY"])


def test_mask_mode_is_the_default_and_leaves_nan(tmp_path):
    frame, calibrated, bad = _calibrated(tmp_path, "mask")
    assert Calibration().cosmetic == "mask"
    whole = np.empty(SHAPE, np.float32)
    frame.source.read(Tile(0, SHAPE[0], 0, SHAPE[1]), whole)
    assert np.isnan(whole[bad]).all()
    np.testing.assert_allclose(whole[~bad], calibrated[~bad], rtol=1e-6)


def test_night_refuses_an_unknown_mode(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(SkystackError, match="--cosmetic"):
        run_night(tmp_path / "raw", tmp_path / "out", cosmetic="smooth")


def test_night_interpolation_gives_counts_and_says_so(tmp_path):
    """The same night with the lights' bad pixels masked and interpolated: interpolation can
    only add values (COUNT never lower, higher where the bad-pixel map hit), and the product
    says its frames carry interpolated pixels."""
    from skystack.demo_data import write_sample_night

    write_sample_night(tmp_path / "raw", shape=(96, 112), n_bias=3, n_dark=3, n_flat=3,
                       dark_exptime=60.0, filters=("V",), n_light=3, light_exptime=60.0,
                       dither_px=3.0, seed=5)
    counts, headers = {}, {}
    for mode in ("mask", "interpolate"):
        run_night(tmp_path / "raw", tmp_path / mode, backend="cpu", previews=False,
                  cosmetic=mode)
        (stack,) = list((tmp_path / mode / "stacks").glob("*.fits"))
        with fits.open(stack) as hdul:
            counts[mode], headers[mode] = hdul["COUNT"].data, hdul[0].header
    assert "COSMETIC" not in headers["mask"]
    assert headers["interpolate"]["COSMETIC"] == "interpolate"
    assert headers["interpolate"]["NCOSMET"] == 3
    assert np.all(counts["interpolate"] >= counts["mask"])
    assert np.any(counts["interpolate"] > counts["mask"])
