"""A mosaic camera's night (issue 17): one MEF file per exposure, one extension per CCD.

The night is written here: 3 CCDs per exposure (gaps between them), each with its own overscan
level and bias pattern, gain and flat response (median 1: the CCDs have the same QE), stars of
known flux in electrons, and 3 exposures dithered so that CCDs overlap other CCDs on the sky.
References: ccdproc per extension for the masters, the stars' true fluxes for the stack."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skystack.night.run import run_night
from skystack.night.scan import scan

ROWS, COLS, OVER = 64, 64, 8  # calibrated CCD shape and overscan columns
CCDS = ("CCD1", "CCD2", "CCD3")
GAINS = (1.0, 1.5, 2.0)  # e-/ADU
BIAS_LEVEL = (500.0, 800.0, 650.0)  # overscan level, ADU
OFFSETS = (0, 70, 140)  # CCD columns on the focal plane (6-pixel gaps)
DITHERS = ((0, 0), (33, 4), (-31, -3))  # exposures' pointing offsets, pixels (x, y)
SCALE = 1e-4  # deg/pixel
SKY_E = 200.0  # electrons per pixel
PSF_SIGMA = 1.5
RDNOISE_ADU = 2.0


def _ccd_wcs(k: int, dx: int, dy: int) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    # Focal-plane (global) pixel X = x + OFFSETS[k] + dx sees the global grid's X.
    w.wcs.crpix = [110.0 - OFFSETS[k] - dx, 32.0 - dy]
    w.wcs.cdelt = [-SCALE, SCALE]
    return w


def _stars(rng) -> np.ndarray:
    """(X, Y, flux e-) in global focal-plane pixels (1-based like CRPIX): two rows of stars
    20 pixels apart (jittered), across the CCDs and their gaps."""
    x, y = np.meshgrid(np.arange(-5.0, 216.0, 20.0), [22.0, 43.0])
    x = x.ravel() + rng.uniform(-2, 2, x.size)
    y = y.ravel() + rng.uniform(-2, 2, y.size)
    flux = rng.uniform(60000, 120000, x.size)
    return np.column_stack([x, y, flux])


def _render(stars, k: int, dx: int, dy: int) -> np.ndarray:
    """Electrons on CCD k of the exposure dithered by (dx, dy): sky + sampled Gaussians."""
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    gx, gy = xx + 1 + OFFSETS[k] + dx, yy + 1 + dy  # global 1-based positions of the pixels
    img = np.full((ROWS, COLS), SKY_E)
    for sx, sy, f in stars:
        if -10 < sx - (OFFSETS[k] + dx) < COLS + 10 and -10 < sy - dy < ROWS + 10:
            img += f / (2 * np.pi * PSF_SIGMA ** 2) * np.exp(
                -((gx - sx) ** 2 + (gy - sy) ** 2) / (2 * PSF_SIGMA ** 2))
    return img


def _response(k: int) -> np.ndarray:
    """CCD k's flat response: a gradient of median 1."""
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    r = 1 + (0.08 + 0.04 * k) * (xx - (COLS - 1) / 2) / COLS + 0.03 * (yy - (ROWS - 1) / 2) / ROWS
    return r / np.median(r)


def _bias_pattern(k: int) -> np.ndarray:
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    return 3.0 * (k + 1) * np.sin(xx / 9.0) + 0.05 * yy


def _raw(electrons, k: int, rng) -> np.ndarray:
    """ADU with overscan columns at the right: bias level, pattern, read noise."""
    raw = np.empty((ROWS, COLS + OVER))
    raw[:, :COLS] = electrons / GAINS[k] + BIAS_LEVEL[k] + _bias_pattern(k)
    raw[:, COLS:] = BIAS_LEVEL[k]
    return raw + rng.normal(0, RDNOISE_ADU, raw.shape)


def _write_mef(path, primary_cards, images, wcs_list=None) -> None:
    hdus = [fits.PrimaryHDU(header=fits.Header(primary_cards))]
    for k, data in enumerate(images):
        h = fits.Header()
        if wcs_list is not None:
            h.update(wcs_list[k].to_header())
        h["EXTNAME"] = CCDS[k]
        h["BIASSEC"] = f"[{COLS + 1}:{COLS + OVER},1:{ROWS}]"
        h["TRIMSEC"] = f"[1:{COLS},1:{ROWS}]"
        h["DATASEC"] = f"[1:{COLS},1:{ROWS}]"
        h["GAIN"] = GAINS[k]
        h["RDNOISE"] = RDNOISE_ADU * GAINS[k]
        hdus.append(fits.ImageHDU(data.astype(np.float32), header=h))
    fits.HDUList(hdus).writeto(path)


def write_mosaic_night(folder, seed: int = 3, qe=(1.0, 1.0, 1.0)) -> np.ndarray:
    """The raw night in ``folder``; returns the stars (X, Y, flux e-). ``qe``: each CCD's
    quantum efficiency (its lights and flats collect that fraction of the electrons)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(5):
        _write_mef(os.path.join(folder, f"bias_{i}.fits"),
                   [("IMAGETYP", "BIAS"), ("EXPTIME", 0.0), ("DATE-OBS", f"2026-03-14T18:0{i}")],
                   [_raw(np.zeros((ROWS, COLS)), k, rng) for k in range(3)])
    for i in range(3):
        _write_mef(os.path.join(folder, f"flat_{i}.fits"),
                   [("IMAGETYP", "FLAT"), ("FILTER", "r"), ("EXPTIME", 2.0),
                    ("DATE-OBS", f"2026-03-14T19:0{i}")],
                   [_raw(20000.0 * qe[k] * _response(k), k, rng) for k in range(3)])
    stars = _stars(rng)
    for e, (dx, dy) in enumerate(DITHERS):
        _write_mef(os.path.join(folder, f"expo_{e}.fits"),
                   [("IMAGETYP", "OBJECT"), ("OBJECT", "FIELD1"), ("FILTER", "r"),
                    ("EXPTIME", 60.0), ("DATE-OBS", f"2026-03-14T21:0{e}")],
                   [_raw(_render(stars, k, dx, dy) * qe[k] * _response(k), k, rng)
                    for k in range(3)],
                   [_ccd_wcs(k, dx, dy) for k in range(3)])
    return stars


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    base = tmp_path_factory.mktemp("mosaic")
    raw = os.path.join(base, "raw")
    stars = write_mosaic_night(raw)
    return base, raw, stars


def test_scan_gives_one_frame_per_ccd(mosaic):
    _, raw, _ = mosaic
    result = scan(raw)
    lights = result.by_role("light")
    assert len(lights) == 3 * len(DITHERS)
    assert {f.name for f in lights} == {os.path.join(raw, f"expo_{e}.fits[{c}]")
                                        for e in range(3) for c in CCDS}
    f = next(f for f in lights if f.ccd == "CCD2")
    # The primary's keywords, the extension's own sections and gain.
    assert (f.object, f.filter, f.exptime, f.hdu) == ("FIELD1", "r", 60.0, 2)
    assert f.header["GAIN"] == GAINS[1]
    assert f.header["BIASSEC"] == f"[{COLS + 1}:{COLS + OVER},1:{ROWS}]"


def _ccdproc_master(paths, k: int, flat: bool = False, bias=None) -> np.ndarray:
    import ccdproc
    from astropy.nddata import CCDData
    from astropy.stats import mad_std

    ccds = []
    for p in paths:
        ccd = CCDData(fits.getdata(p, ext=k + 1).astype(float), unit="adu")
        ccd = ccdproc.subtract_overscan(ccd, fits_section=f"[{COLS + 1}:{COLS + OVER},1:{ROWS}]",
                                        median=True, overscan_axis=1)
        ccd = ccdproc.trim_image(ccd, fits_section=f"[1:{COLS},1:{ROWS}]")
        if bias is not None:
            ccd = ccdproc.subtract_bias(ccd, CCDData(bias, unit="adu"))
        ccds.append(ccd)
    scale = [1 / np.median(c.data) for c in ccds] if flat else None
    combined = ccdproc.combine(ccds, method="average", sigma_clip=True, sigma_clip_low_thresh=3,
                               sigma_clip_high_thresh=3, sigma_clip_func=np.ma.median,
                               sigma_clip_dev_func=mad_std, scale=scale)
    data = np.asarray(combined.data, float)
    return data / np.median(data) if flat else data


def _aperture_fluxes(image: np.ndarray, wcs: WCS, stars, world_of) -> list[tuple]:
    """(true flux, measured flux) of each star fully inside the stack (radius 6, sky annulus)."""
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    out = []
    for sx, sy, f in stars:
        if (np.hypot(stars[:, 0] - sx, stars[:, 1] - sy) < 16).sum() > 1:
            continue  # a neighbour in the aperture or the sky annulus
        x, y = wcs.world_to_pixel_values(*world_of(sx, sy))
        r = np.hypot(xx - x, yy - y)
        ap, ann = r < 7, (r > 10) & (r < 14)
        if not (np.isfinite(image[r < 14]).all() and ann.sum() > 100
                and 14 < x < image.shape[1] - 14 and 14 < y < image.shape[0] - 14):
            continue
        sky = np.median(image[ann])
        out.append((f, float((image[ap] - sky).sum())))
    return out


def _world(sx, sy):
    return _ccd_wcs(0, 0, 0).pixel_to_world_values(sx - 1, sy - 1)


@pytest.fixture(scope="module")
def normalised(mosaic):
    base, raw, _ = mosaic
    out = os.path.join(base, "out_norm")
    result = run_night(raw, out, backend="cpu", previews=False, gain_normalise=True)
    return out, result


def test_masters_per_ccd_match_ccdproc(mosaic, normalised):
    _, raw, _ = mosaic
    out, result = normalised
    biases = sorted(os.path.join(raw, f"bias_{i}.fits") for i in range(5))
    flats = sorted(os.path.join(raw, f"flat_{i}.fits") for i in range(3))
    for k, ccd in enumerate(CCDS):
        bias = fits.getdata(os.path.join(out, "masters", f"bias_{ccd}.fits"))
        ref_bias = _ccdproc_master(biases, k)
        # As the single-chip night's reference test: agreement to the noise (the clipping of
        # a few pixels differs); another CCD's master would differ by its bias pattern (3-9 ADU).
        diff = np.abs(bias - ref_bias)
        assert diff.mean() < 0.2 and np.median(diff) < 0.01, (ccd, diff.mean())
        # the bias pattern of this CCD, not another's
        assert np.abs(bias - _bias_pattern(k)).mean() < 1.0
        flat = fits.getdata(os.path.join(out, "masters", f"flat_r_{ccd}.fits"))
        np.testing.assert_allclose(flat, _ccdproc_master(flats, k, flat=True, bias=ref_bias),
                                   rtol=1e-3)
        np.testing.assert_allclose(flat, _response(k), rtol=2e-3)


def test_gain_normalised_stack_in_electrons_agrees_across_ccds(mosaic, normalised):
    _, _, stars = mosaic
    out, result = normalised
    stack = result.product("stack")
    assert stack.status == "built" and len(stack.inputs) == 9
    assert all("[" in name for name in stack.inputs)  # file[EXTNAME]
    with fits.open(stack.path) as hdul:
        image, header = hdul[0].data.astype(float), hdul[0].header
    assert header["BUNIT"] == "electron"
    # The grid covers every CCD of every exposure (not one CCD's frame).
    assert image.shape[1] > 3 * COLS + 2 * 6
    pairs = _aperture_fluxes(image, WCS(header).celestial, stars, _world)
    assert len(pairs) >= 10
    ratios = np.array([m / f for f, m in pairs])
    # Every star's flux in electrons, whichever CCDs it fell on, within 0.5 % of the truth.
    assert np.all(np.abs(ratios - 1) < 0.005), ratios
    summary = json.load(open(os.path.join(out, "summary.json")))
    check = next(p for p in summary["products"] if p["kind"] == "stack")["ccd_consistency"]
    assert check["flagged"] == [] and set(check["ccds"]) == set(CCDS)
    for v in check["ccds"].values():
        assert abs(v["median_ratio"] - 1) < 0.01, check
    names = {f["file"] for f in summary["frames"]}
    assert any(n.endswith("expo_1.fits[CCD2]") for n in names)


def test_without_gain_normalisation_the_check_flags_the_gains(mosaic, tmp_path):
    _, raw, _ = mosaic
    out = os.path.join(tmp_path, "out_adu")
    result = run_night(raw, out, backend="cpu", previews=False)
    stack = result.product("stack")
    summary = json.load(open(os.path.join(out, "summary.json")))
    check = next(p for p in summary["products"] if p["kind"] == "stack")["ccd_consistency"]
    # CCD1 (gain 1) reads 1.5-2x more ADU than the others, CCD3 (gain 2) 0.5-0.75x.
    assert {"CCD1", "CCD3"} <= set(check["flagged"])
    assert 1.4 < check["ccds"]["CCD1"]["median_ratio"] < 2.1
    assert 0.45 < check["ccds"]["CCD3"]["median_ratio"] < 0.76
    assert any("CCD CCD1 deviates" in n for n in stack.notes)


def test_ccds_of_different_quantum_efficiency_are_put_on_one_scale(tmp_path):
    """The CCDs collect 0.9, 1.0 and 1.12 of the light. Each master flat is normalised to its
    own median, so the flats alone would leave those steps in the co-add; the flats' levels in
    electrons (FLATNORM x GAIN, one lamp for all CCDs) put every CCD on the mosaic's scale:
    every star's flux in electrons is the median QE (1.0) x its flux, whichever CCDs it fell
    on, within 0.5 %, and the consistency check flags no CCD."""
    raw = os.path.join(tmp_path, "raw")
    stars = write_mosaic_night(raw, qe=(0.9, 1.0, 1.12))
    out = os.path.join(tmp_path, "out")
    result = run_night(raw, out, backend="cpu", previews=False, gain_normalise=True)
    with fits.open(result.product("stack").path) as hdul:
        image, header = hdul[0].data.astype(float), hdul[0].header
    pairs = _aperture_fluxes(image, WCS(header).celestial, stars, _world)
    assert len(pairs) >= 10
    ratios = np.array([m / f for f, m in pairs])
    assert np.all(np.abs(ratios - 1) < 0.005), ratios
    summary = json.load(open(os.path.join(out, "summary.json")))
    check = next(p for p in summary["products"] if p["kind"] == "stack")["ccd_consistency"]
    assert check["flagged"] == [], check


def test_survey_night_ccds_agree_in_the_overlaps(tmp_path):
    """The generated survey night (6 CCDs of gains 1.2-2.6 e-/ADU and QEs 0.93-1.07, cosmic
    rays, a satellite trail): gain-normalised, with the mosaic's flat level, every CCD agrees
    with the others in the overlaps within 3 % and none is flagged (sources are counted only
    where both exposures see them, so a cosmic ray in one does not pull a pair)."""
    from skystack.survey_data import write_survey_night

    write_survey_night(tmp_path / "raw")
    result = run_night(tmp_path / "raw", tmp_path / "out", backend="cpu", previews=False,
                       gain_normalise=True)
    stacks = [p for p in result.products if p.kind == "stack"]
    assert len(stacks) == 2
    for p in stacks:
        check = p.ccd_consistency
        assert len(check["ccds"]) == 6 and check["flagged"] == [], check
        for v in check["ccds"].values():
            assert abs(v["median_ratio"] - 1) < 0.03, check
