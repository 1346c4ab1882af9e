"""``skystack night`` aligning by stars: a night whose lights carry no WCS is registered by its
stars and stacked as well as the same night aligned by the true WCS (checked against the known
truth); frame selection's decisions reach the summary and the table."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skystack.cli import main
from skystack.demo_data import truth_image, write_sample_night
from skystack.night.run import format_night_table, run_night

SHAPE = (256, 272)
N_LIGHT = 5
LIGHT_T = 60.0
WCS_KEYS = ("WCSAXES", "CTYPE", "CRPIX", "CRVAL", "CDELT", "CUNIT", "CD1_", "CD2_", "PC1_",
            "PC2_", "LONPOLE", "LATPOLE", "RADESYS", "EQUINOX", "MJDREF", "A_", "B_", "AP_",
            "BP_")


def _strip_wcs(path) -> None:
    with fits.open(path, mode="update") as hdul:
        header = hdul[0].header
        for key in list(header.keys()):
            if key.startswith(WCS_KEYS):
                del header[key]


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    sample = write_sample_night(root / "raw", shape=SHAPE, n_bias=5, n_dark=3,
                                dark_exptime=LIGHT_T, n_flat=3, filters=("V", "R"),
                                n_light=N_LIGHT, light_exptime=LIGHT_T, dither_px=6.0,
                                rotation_deg=2.0, seed=21)
    shutil.copytree(root / "raw", root / "raw_nowcs")
    for paths in sample.light_by_object["M67"].values():
        for p in paths:
            _strip_wcs(root / "raw_nowcs" / p.name)
    # UNCERT from the scatter between frames: it includes the smoothing of each grid's
    # resampling, so residual / UNCERT compares the alignments, not their interpolation phases
    # (the noise model's UNCERT is the noise before resampling; tests/test_uncertainty.py).
    by_wcs = run_night(root / "raw", root / "by_wcs", backend="cpu", previews=False,
                       uncertainty="scatter")
    lines: list[str] = []
    by_stars = run_night(root / "raw_nowcs", root / "by_stars", backend="cpu", previews=False,
                         log=lines.append, uncertainty="scatter")
    return sample, root, by_wcs, by_stars, lines


def _residual_in_noise(sample, stack_path, true_wcs):
    """(median of stack / truth, robust sigma of (stack - truth) / UNCERT) where every light
    covers the pixel, 10 px from the edges."""
    image = fits.getdata(stack_path).astype(np.float64)
    unc = fits.getdata(stack_path, "UNCERT")
    count = fits.getdata(stack_path, "COUNT")
    truth = truth_image(sample, "M67", "V", true_wcs, image.shape)
    inner = np.zeros(image.shape, bool)
    inner[10:-10, 10:-10] = True
    good = inner & (count == N_LIGHT) & np.isfinite(image)
    assert good.sum() > 0.5 * image.size
    z = (image - truth)[good] / unc[good]
    return (float(np.median(image[good] / truth[good])),
            float(1.4826 * np.median(np.abs(z - np.median(z)))))


def test_lights_without_wcs_are_aligned_by_stars(nights):
    sample, root, _, by_stars, lines = nights
    out = root / "by_stars"
    for filt in "VR":
        header = fits.getheader(out / "stacks" / f"M67_{filt}.fits")
        assert header["ALIGN"] == "stars"
    summary = json.loads((out / "summary.json").read_text())
    info = summary["align"]["objects"]["M67"]
    assert info["mode"] == "stars" and "sharpest" in info["why"]
    lights = [f for f in summary["frames"] if f["role"] == "light"]
    assert len(lights) == 2 * N_LIGHT and all(f["used"] for f in lights)
    for f in lights:
        assert f["stars"]["n_stars"] >= 15 and 1.5 < f["stars"]["fwhm_px"] < 8
        reg = f["registration"]
        assert reg["status"] in ("ok", "reference")
        if reg["status"] == "ok":
            # rms of the matched stars' centroids (noise of faint stars), not the error of the
            # fitted transform: that shows in the stack comparison below.
            assert reg["n_matched"] >= 10 and reg["rms_px"] < 0.3
    # One registration for the object (every filter), logged once.
    assert sum("align   stars" in line for line in lines) == 1
    assert "FWHM" in format_night_table(by_stars).splitlines()[0]


def test_star_aligned_stack_matches_the_wcs_aligned_one_within_the_noise(nights):
    sample, root, *_ = nights
    ref = fits.getheader(root / "by_stars" / "stacks" / "M67_V.fits")["GRIDREF"]
    # The star-aligned stack lies on its reference light's pixel grid, whose true WCS is that
    # light's original header.
    ref_wcs = WCS(fits.getheader(root / "raw" / ref))
    ratio_s, spread_s = _residual_in_noise(sample, root / "by_stars" / "stacks" / "M67_V.fits",
                                           ref_wcs)
    wcs_path = root / "by_wcs" / "stacks" / "M67_V.fits"
    ratio_w, spread_w = _residual_in_noise(sample, wcs_path, WCS(fits.getheader(wcs_path)))
    assert ratio_s == pytest.approx(1.0, abs=0.003)
    assert ratio_s == pytest.approx(ratio_w, abs=0.001)
    # Residuals against the truth are noise of the size the UNCERT plane says, in both.
    assert spread_w < 1.6
    assert spread_s == pytest.approx(spread_w, rel=0.1)


def test_star_aligned_night_without_wcs_claims_no_sky_coordinates(nights):
    """The lights have no WCS: the stacks get a pixel-only WCS on the reference light's grid
    (world = its FITS pixels), never the synthetic sky position used for resampling."""
    _, root, *_ = nights
    for filt in "VR":
        header = fits.getheader(root / "by_stars" / "stacks" / f"M67_{filt}.fits")
        wcs = WCS(header)
        assert not wcs.has_celestial and header["CTYPE1"] == header["CTYPE2"] == "PIXEL"
        assert not [k for k in ("RADESYS", "EQUINOX", "LONPOLE", "LATPOLE") if k in header]
        np.testing.assert_allclose(wcs.pixel_to_world_values([0, 100], [0, 50]),
                                   [[1, 101], [1, 51]], atol=1e-9)
    summary = json.loads((root / "by_stars" / "summary.json").read_text())
    assert summary["align"]["objects"]["M67"]["sky_coordinates"] is False
    by_wcs = json.loads((root / "by_wcs" / "summary.json").read_text())
    assert by_wcs["align"]["objects"]["M67"]["sky_coordinates"] is True
    assert WCS(fits.getheader(root / "by_wcs" / "stacks" / "M67_V.fits")).has_celestial


def test_selection_skips_frames_with_the_reason(nights, tmp_path):
    sample, root, *_ = nights
    out = tmp_path / "sel"
    code = main(["night", str(root / "raw"), "-o", str(out), "--backend", "cpu",
                 "--no-previews", "--best-fraction", "0.6", "-q"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    for filt in "VR":
        lights = [f for f in summary["frames"]
                  if f["role"] == "light" and f"_{filt}_" in os.path.basename(f["file"])]
        kept = [f for f in lights if f["used"]]
        assert len(kept) == 3  # ceil(0.6 x 5)
        dropped = [f for f in lights if not f["used"]]
        assert all("not selected: not in the best 60%" in f["reason"] for f in dropped)
        # The sharpest frames are the ones kept.
        assert max(f["stars"]["fwhm_px"] for f in kept) <= min(
            f["stars"]["fwhm_px"] for f in dropped)
    assert fits.getheader(out / "stacks" / "M67_V.fits")["ALIGN"] == "wcs"
    # A different selection is another recipe: refused without --overwrite.
    code = main(["night", str(root / "raw"), "-o", str(out), "--backend", "cpu",
                 "--no-previews", "--max-fwhm", "3.0", "-q"])
    assert code == 2


def test_bad_align_options_are_one_line_errors(nights, tmp_path, capsys):
    _, root, *_ = nights
    code = main(["night", str(root / "raw"), "-o", str(tmp_path / "x"), "--max-fwhm", "-1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max-fwhm" in err[0]
