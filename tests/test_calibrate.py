"""Calibration in the tile loop against ccdproc's own overscan/trim/bias/dark/flat chain."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.wcs import WCS

from skystack.errors import SkystackError
from skystack.io.inputs import load_frames
from skystack.io.reader import Tile
from skystack.night.calibrate import (
    Calibration,
    Section,
    calibrated_frame,
    parse_section,
    section_text,
)

ccdproc = pytest.importorskip("ccdproc")


def test_parse_section_is_fits_one_based_inclusive():
    assert parse_section("[1:100,1:50]", (50, 120)) == Section(0, 50, 0, 100)
    assert parse_section("[ 101:120 , 1:50 ]", (50, 120)) == Section(0, 50, 100, 120)
    assert parse_section("[120:101,50:1]", (50, 120)) == Section(0, 50, 100, 120)
    assert section_text(Section(0, 50, 100, 120)) == "[101:120,1:50]"
    with pytest.raises(SkystackError, match="outside"):
        parse_section("[1:121,1:50]", (50, 120))
    with pytest.raises(SkystackError, match="form"):
        parse_section("1:10,1:10", (50, 120))


def _write(path, data, header=None):
    fits.PrimaryHDU(data, header=header).writeto(path)
    return str(path)


@pytest.fixture
def chip(tmp_path):
    """A raw 60x80 frame with a 12-column overscan at the right, and masters for 60x64."""
    rng = np.random.default_rng(3)
    rows, cols = 60, 80
    trim = "[3:66,1:60]"  # columns 2..65 (0-based) kept
    biassec = "[69:80,1:60]"
    row_level = 500 + 3 * np.sin(np.arange(rows) / 7.0)
    raw = rng.normal(0, 4, (rows, cols)) + row_level[:, None]
    raw[:, 2:66] += rng.uniform(100, 3000, (rows, 64))
    raw = np.round(raw).clip(0, 65535).astype(np.uint16)
    raw[10, 20] = 0  # a pixel that the bad-pixel mask will flag
    h = fits.Header()
    h["BIASSEC"] = biassec
    h["TRIMSEC"] = trim
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [40.0, 30.0]
    w.wcs.cdelt = [-1 / 3600, 1 / 3600]
    h.update(w.to_header())
    bias = rng.normal(2, 1, (rows, 64)).astype(np.float32)
    dark = rng.uniform(0, 20, (rows, 64)).astype(np.float32)
    flat = rng.uniform(0.8, 1.2, (rows, 64)).astype(np.float32)
    flat[5, 5] = 0.0  # not positive: calibrated value must be NaN
    bad = np.zeros((rows, 64), np.uint8)
    bad[10, 18] = 1  # = raw column 20
    paths = {
        "raw": _write(tmp_path / "raw.fits", raw, h),
        "bias": _write(tmp_path / "bias.fits", bias),
        "dark": _write(tmp_path / "dark.fits", dark),
        "flat": _write(tmp_path / "flat.fits", flat),
        "bad": _write(tmp_path / "bad.fits", bad),
    }
    return paths, raw, bias, dark, flat, bad, w


def _read_all(frame, tiles=1):
    out = np.empty(frame.shape, np.float32)
    edges = np.linspace(0, frame.shape[0], tiles + 1).astype(int)
    for r0, r1 in zip(edges[:-1], edges[1:]):
        frame.source.read(Tile(int(r0), int(r1), 0, frame.shape[1]), out[r0:r1])
    return out


@pytest.mark.parametrize("tiles", [1, 4])
def test_full_chain_matches_ccdproc(chip, tiles):
    paths, raw, bias, dark, flat, bad, _ = chip
    shape = raw.shape
    scale = 1.7
    cal = Calibration(
        overscan=parse_section("[69:80,1:60]", shape), trim=parse_section("[3:66,1:60]", shape),
        bias=load_frames([paths["bias"]])[0], dark=load_frames([paths["dark"]])[0],
        dark_scale=scale, flat=load_frames([paths["flat"]])[0],
        badpix=load_frames([paths["bad"]])[0])
    frame = calibrated_frame(load_frames([paths["raw"]])[0], cal)
    got = _read_all(frame, tiles)

    ccd = CCDData(raw.astype(np.float64), unit=u.adu)
    ccd = ccdproc.subtract_overscan(ccd, fits_section="[69:80,1:60]", median=True,
                                    overscan_axis=1)
    ccd = ccdproc.trim_image(ccd, fits_section="[3:66,1:60]")
    ccd = ccdproc.subtract_bias(ccd, CCDData(bias.astype(np.float64), unit=u.adu))
    dark_ccd = CCDData(dark.astype(np.float64), unit=u.adu, meta={"EXPTIME": 1.0})
    ccd.meta["EXPTIME"] = scale
    ccd = ccdproc.subtract_dark(ccd, dark_ccd, scale=True, exposure_time="EXPTIME",
                                exposure_unit=u.s)
    with np.errstate(divide="ignore", invalid="ignore"):
        ccd = ccdproc.flat_correct(ccd, CCDData(flat.astype(np.float64), unit=u.adu),
                                   norm_value=1.0)
    want = np.asarray(ccd.data, np.float64)
    assert np.isnan(got[5, 5]) and np.isnan(got[10, 18])
    good = np.ones(got.shape, bool)
    good[5, 5] = good[10, 18] = False
    assert np.isfinite(got[good]).all()
    np.testing.assert_allclose(got[good], want[good], rtol=2e-6, atol=2e-3)


def test_trimmed_frame_keeps_sky_positions(chip):
    paths, raw, *_, w = chip
    cal = Calibration(trim=parse_section("[3:66,1:60]", raw.shape))
    frame = calibrated_frame(load_frames([paths["raw"]])[0], cal)
    assert frame.shape == (60, 64)
    new = WCS(frame.header)
    ra0, dec0 = w.pixel_to_world_values(2 + 10.0, 7.0)  # raw column 12 = trimmed column 10
    ra1, dec1 = new.pixel_to_world_values(10.0, 7.0)
    assert abs(ra0 - ra1) < 1e-10 and abs(dec0 - dec1) < 1e-10
    assert frame.header["LTV1"] == -2
    np.testing.assert_array_equal(_read_all(frame), raw[:, 2:66].astype(np.float32))


def test_master_of_another_shape_is_refused(chip):
    paths, raw, *_ = chip
    cal = Calibration(bias=load_frames([paths["bias"]])[0])  # 60x64 master, untrimmed 60x80
    with pytest.raises(SkystackError, match="master"):
        calibrated_frame(load_frames([paths["raw"]])[0], cal)
