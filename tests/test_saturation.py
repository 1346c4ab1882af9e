"""Saturation masking (skystack.io.saturation): raw pixels at or above SATURATE (or
--saturation) are left out of every combination instead of being averaged with the others;
references are plain NumPy on the known pixel values."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits
from tiny_night import SHAPE, write_lights

from skystack import combine
from skystack.cli import main
from skystack.io.inputs import load_frames
from skystack.io.reader import HandlePool, Tile
from skystack.night.calibrate import CalibratedSpec, Calibration, calibrated_frame
from skystack.night.run import run_night

CORE = (slice(30, 34), slice(28, 33))  # the saturated star core in frame 0
TRUE_CORE = 8000.0
LEVEL = 5000.0


def _frames(tmp_path, saturate_first: float | None = LEVEL, dtype=np.uint16):
    """Three raw frames (integers, as a camera writes them): a smooth background of ~1000
    ADU and a star core of TRUE_CORE ADU; frame 0's core clipped at ``LEVEL`` (its header
    says SATURATE = ``saturate_first``)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    base = 1000.0 + 2.0 * xx + rng.normal(0, 3, (3, *SHAPE))
    data = base.copy()
    data[:, CORE[0], CORE[1]] = TRUE_CORE + rng.normal(0, 3, (3, 4, 5))
    data[0][data[0] >= LEVEL] = LEVEL  # the camera clips at full well
    data = np.round(data)
    paths = []
    for k in range(3):
        cards = [("IMAGETYP", "LIGHT"), ("EXPTIME", 10.0)]
        if k == 0 and saturate_first is not None:
            cards.append(("SATURATE", saturate_first))
        path = os.fspath(tmp_path / f"raw_{k}.fits")
        fits.PrimaryHDU(data[k].astype(dtype), header=fits.Header(cards)).writeto(path)
        paths.append(path)
    return paths, data


def test_saturated_core_comes_from_the_unsaturated_frames_only(tmp_path):
    paths, data = _frames(tmp_path)
    out = tmp_path / "m.fits"
    ccd = combine(paths, out, method="mean", reject="none", backend="cpu")
    masked = data.copy()
    masked[0][data[0] >= LEVEL] = np.nan
    np.testing.assert_allclose(ccd.data, np.nanmean(masked, axis=0), rtol=1e-6)
    assert np.all(ccd.count[CORE] == 2)
    assert (ccd.count == 3).sum() == ccd.count.size - ccd.count[CORE].size
    assert np.all(np.abs(ccd.data[CORE] - TRUE_CORE) < 20)  # not pulled towards the clip
    with fits.open(out) as hdul:
        assert hdul[0].header["SATMASK"] == 1 and hdul[0].header["SATLEVEL"] == LEVEL
        np.testing.assert_array_equal(hdul["COUNT"].data, ccd.count)


def test_without_a_level_nothing_is_masked_and_the_header_says_so(tmp_path):
    paths, data = _frames(tmp_path, saturate_first=None)
    out = tmp_path / "m.fits"
    ccd = combine(paths, out, method="mean", reject="none", backend="cpu")
    np.testing.assert_allclose(ccd.data, data.mean(axis=0), rtol=1e-6)
    assert np.all(ccd.count == 3)
    header = fits.getheader(out)
    assert header["SATMASK"] == 0 and "no saturation masking" in header.comments["SATMASK"]
    assert "SATLEVEL" not in header


def test_command_line_level_applies_to_every_frame(tmp_path):
    paths, data = _frames(tmp_path, saturate_first=None)
    out = tmp_path / "m.fits"
    level = 7990.0  # below some of the unclipped cores too
    assert main(["combine", *paths, "-o", str(out), "--method", "mean", "--reject", "none",
                 "--backend", "cpu", "--saturation", str(level), "-q"]) == 0
    masked = np.where(data >= level, np.nan, data)
    with fits.open(out) as hdul:
        np.testing.assert_allclose(hdul[0].data, np.nanmean(masked, axis=0), rtol=1e-6)
        np.testing.assert_array_equal(hdul["COUNT"].data, np.isfinite(masked).sum(axis=0))
        assert hdul[0].header["SATMASK"] == 3


def test_bias_subtracted_frames_keep_their_pixels(tmp_path):
    """SATURATE is a raw level: a frame whose bias was subtracted is not masked by it."""
    paths, data = _frames(tmp_path)
    with fits.open(paths[0], mode="update") as hdul:
        hdul[0].header["BIASSUB"] = True
    ccd = combine(paths, method="mean", reject="none", backend="cpu")
    np.testing.assert_allclose(ccd.data, data.mean(axis=0), rtol=1e-6)
    assert ccd.meta["SATMASK"] == 0


def test_unreadable_saturate_is_a_one_line_error(tmp_path, capsys):
    paths, _ = _frames(tmp_path)
    with fits.open(paths[0], mode="update") as hdul:
        hdul[0].header["SATURATE"] = "full"
    assert main(["combine", *paths, "-o", str(tmp_path / "m.fits"), "--backend", "cpu",
                 "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "raw_0.fits" in err and "SATURATE" in err


def test_calibration_compares_the_raw_value_before_the_bias(tmp_path):
    """raw >= level is masked even where raw - bias is below the level; the others are
    calibrated as usual (and the spec sent to another process keeps the level)."""
    raw = np.full((8, 8), 990.0, np.float32)
    raw[2, 3] = 1000.0  # saturated: raw at the level
    raw[5, 5] = 999.0  # just below
    bias = np.full((8, 8), 100.0, np.float32)
    path = tmp_path / "raw.fits"
    fits.PrimaryHDU(raw, header=fits.Header([("SATURATE", 1000.0)])).writeto(path)
    fits.PrimaryHDU(bias).writeto(tmp_path / "bias.fits")
    frame = load_frames([os.fspath(path)])[0]
    bias_frame = load_frames([os.fspath(tmp_path / "bias.fits")])[0]
    cal = Calibration(bias=bias_frame, saturation=1000.0)
    cf = calibrated_frame(frame, cal)
    expected = raw - bias
    expected[raw >= 1000.0] = np.nan
    out = np.empty((8, 8), np.float32)
    cf.source.read(Tile(0, 8, 0, 8), out)
    np.testing.assert_array_equal(out, expected)
    assert cf.header["SATLEVEL"] == 1000.0
    spec = cf.source.to_spec("raw")
    assert isinstance(spec, CalibratedSpec) and spec.saturation == 1000.0
    again = np.empty((8, 8), np.float32)
    pool = HandlePool()
    spec.open(pool).read(Tile(0, 8, 0, 8), again)
    pool.close()
    np.testing.assert_array_equal(again, expected)


def test_night_masks_saturated_raw_pixels_before_calibration(tmp_path):
    """The night's stack of three lights: frame 0's core (at its SATURATE) is left out, so
    the stack there is the mean of the two other frames and COUNT is 2."""
    raw = tmp_path / "raw"
    raw.mkdir()
    paths = write_lights(raw, "light", "M1", "V", n=3)
    core = {}
    for k, p in enumerate(paths):
        with fits.open(p, mode="update") as hdul:
            hdul[0].data[CORE] = TRUE_CORE + k
            if k == 0:
                hdul[0].data[CORE] = LEVEL
                hdul[0].header["SATURATE"] = LEVEL
            core[k] = np.array(hdul[0].data[CORE], np.float64)
    out = tmp_path / "out"
    run_night(raw, out, backend="cpu", previews=False, reject="none", align="wcs")
    (stack,) = [p for p in (out / "stacks").glob("*.fits")]
    with fits.open(stack) as hdul:
        np.testing.assert_allclose(hdul[0].data[CORE], (core[1] + core[2]) / 2, rtol=1e-5)
        assert np.all(hdul["COUNT"].data[CORE] == 2)
        assert hdul["COUNT"].data[0, 0] == 3
        assert hdul[0].header["SATMASK"] == 1


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_level_must_be_finite(tmp_path, value):
    paths, _ = _frames(tmp_path)
    assert main(["combine", *paths, "-o", str(tmp_path / "m.fits"), "--saturation", value,
                 "-q"]) == 2
