"""``skystack night`` on a generated night with known truth (noise, hot pixels, vignetted and
dusty flats, cosmic rays, dithers and rotation), and its re-run / interruption behaviour."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skystack.cli import main
from skystack.demo_data import write_sample_night
from skystack.errors import SkystackError
from skystack.night.run import run_night

SHAPE = (320, 336)
N_BIAS, N_DARK, N_FLAT, N_LIGHT = 9, 5, 7, 9
LIGHT_T = 90.0  # no dark of this exposure: the 60 s dark is scaled


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("night")
    sample = write_sample_night(root / "raw", shape=SHAPE, n_bias=N_BIAS, n_dark=N_DARK,
                                dark_exptime=60.0, n_flat=N_FLAT, filters=("B", "V", "R"),
                                n_light=N_LIGHT, light_exptime=LIGHT_T, dither_px=5.0,
                                rotation_deg=2.0, seed=11)
    # Things an observer's directory also holds: junk that must be skipped, not fatal.
    (root / "raw" / "notes.fits").write_text("not a FITS file")
    fits.PrimaryHDU(np.zeros((4, 4), np.float32),
                    header=fits.Header([("IMAGETYP", "FOCUS")])).writeto(root / "raw" / "f.fits")
    out = root / "out"
    lines: list[str] = []
    result = run_night(root / "raw", out, backend="cpu", log=lines.append)
    return sample, out, result, lines


def test_layout_summary_and_skipped_files(night):
    sample, out, result, _ = night
    for name in ["masters/bias.fits", "masters/dark_60s.fits", "masters/flat_B.fits",
                 "masters/flat_V.fits", "masters/flat_R.fits", "masters/badpix.fits",
                 "stacks/M67_B.fits", "stacks/M67_V.fits", "stacks/M67_R.fits",
                 "previews/M67_V.png", "previews/M67_rgb.png", "summary.json"]:
        assert (out / name).is_file(), name
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    summary = json.loads((out / "summary.json").read_text())
    by_file = {os.path.basename(f["file"]): f for f in summary["frames"]}
    assert not by_file["notes.fits"]["used"] and "FITS" in by_file["notes.fits"]["reason"]
    assert not by_file["f.fits"]["used"] and "FOCUS" in by_file["f.fits"]["reason"]
    lights = [f for f in summary["frames"] if f["role"] == "light"]
    assert len(lights) == 3 * N_LIGHT and all(f["used"] for f in lights)
    first = lights[0]["masters"]
    assert first["bias"] == "bias.fits" and first["dark"] == "dark_60s.fits"
    assert first["dark_scale"] == pytest.approx(LIGHT_T / 60.0)
    assert first["flat"].startswith("flat_") and first["badpix"] == "badpix.fits"
    # All filters of an object share one grid, so that colours align.
    grids = [WCS(fits.getheader(out / "stacks" / f"M67_{f}.fits")) for f in "BVR"]
    for g in grids[1:]:
        assert np.allclose(g.wcs.crval, grids[0].wcs.crval)
        assert np.allclose(g.wcs.crpix, grids[0].wcs.crpix)
        assert np.allclose(g.pixel_scale_matrix, grids[0].pixel_scale_matrix)
    with fits.open(out / "stacks" / "M67_V.fits") as hdul:
        assert hdul[0].header["NCOMBINE"] == N_LIGHT
        assert {"UNCERT", "MASK", "COUNT", "EXPMAP"} <= {h.name for h in hdul}


def test_master_bias_is_within_its_noise_of_the_truth(night):
    sample, out, *_ = night
    t = sample.truth
    truth = t["bias_level"] + t["bias_columns"][None, :]
    bias = fits.getdata(out / "masters" / "bias.fits")
    err = bias - truth
    expected = t["read_noise"] / np.sqrt(N_BIAS)  # standard error of a mean of N_BIAS
    assert abs(float(np.mean(err))) < 5 * expected / np.sqrt(err.size) + 0.5  # ADU quantisation
    assert float(np.std(err)) < 1.15 * expected + 0.1


def test_hot_pixels_are_recovered(night):
    sample, out, *_ = night
    bad = fits.getdata(out / "masters" / "badpix.fits").astype(bool)
    hot = sample.truth["hot_pixels"]
    found = bad[hot[:, 0], hot[:, 1]]
    assert found.mean() >= 0.95
    assert bad.sum() <= len(hot) + 0.002 * bad.size  # few false positives


def test_amp_glow_is_not_masked(night):
    """The darks' glowing corner (amplifier glow, 40x the dark current at the corner) is
    subtracted with the dark, not flagged: the stack keeps every frame there."""
    sample, out, *_ = night
    bad = fits.getdata(out / "masters" / "badpix.fits").astype(bool)
    hot = np.zeros(SHAPE, bool)
    hot[tuple(sample.truth["hot_pixels"].T)] = True
    assert (bad & ~hot).mean() <= 0.002
    ny, nx = SHAPE
    glow_adu = sample.truth["amp_glow"] * 60.0 / sample.truth["gain"]  # in the 60 s dark
    # Inside the dithers' and rotation's reach (< 16 px) of the edges, near the corner
    # (row ny - 1, column 0) where the glow is 2.5-16x the dark current (4 ADU in 60 s): above
    # the global median of the dark it passes for hot over most of this box.
    corner = (slice(ny - 48, ny - 16), slice(16, 48))
    assert glow_adu[corner].min() > 10.0 and np.median(glow_adu[corner]) > 20.0
    count = fits.getdata(out / "stacks" / "M67_V.fits", "COUNT")[corner]
    # Each light's hot pixels (0.1 %, spread by the resampling) take a few percent.
    assert (count == N_LIGHT).mean() > 0.9


@pytest.mark.parametrize("filt", ["B", "V", "R"])
def test_flats_within_0p3_percent_of_the_truth(night, filt):
    sample, out, *_ = night
    flat = fits.getdata(out / "masters" / f"flat_{filt}.fits")
    truth = sample.truth["flat"][filt]
    assert np.nanmedian(flat) == pytest.approx(1.0, abs=1e-6)
    rel = flat / truth - 1
    assert float(np.nanmedian(np.abs(rel))) < 0.003
    # Large scales (vignetting, dust): 8x8-pixel means agree far better than single pixels.
    r, c = (SHAPE[0] // 8) * 8, (SHAPE[1] // 8) * 8
    binned = (flat[:r, :c] / truth[:r, :c]).reshape(r // 8, 8, c // 8, 8).mean(axis=(1, 3))
    assert float(np.max(np.abs(binned - 1))) < 0.003


def _aperture(image, x, y, radius, sky):
    """Sum of ``image - sky`` within ``radius`` px of (x, y)."""
    yy, xx = np.indices(image.shape)
    inside = np.hypot(xx - x, yy - y) < radius
    return float(np.nansum(image[inside] - sky))


def test_stack_flux_within_0p3_percent_and_cosmic_rays_removed(night):
    sample, out, *_ = night
    t = sample.truth
    path = out / "stacks" / "M67_V.fits"
    image = fits.getdata(path)
    wcs = WCS(fits.getheader(path))
    stars = t["stars"]
    x, y = wcs.world_to_pixel_values(stars["ra"], stars["dec"])
    expected = t["star_flux"]["V"] * LIGHT_T / t["gain"]  # ADU in one exposure, flat-fielded
    keep = (x > 30) & (x < SHAPE[1] - 30) & (y > 30) & (y < SHAPE[0] - 30) & (expected > 2e4)
    # Isolated bright stars: total flux in 12-px apertures above the true sky (an annulus median
    # is biased high by faint stars and wings, by 0.3-0.9 ADU here), against the truth's flux
    # times the Moffat profile's enclosed fraction averaged over the frames' seeing.
    others = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(others, np.inf)
    keep &= others.min(axis=1) > 14
    assert keep.sum() >= 4
    beta = t["moffat_beta"]
    alpha = t["fwhm"]["V"] / (2 * np.sqrt(2 ** (1 / beta) - 1))
    enclosed = float(np.mean(1 - (1 + (12.0 / alpha) ** 2) ** (1 - beta)))
    sky = t["sky"]["V"] * LIGHT_T * float(np.mean(t["sky_scale"]["V"]))
    got = sum(_aperture(image, xi, yi, 12.0, sky) for xi, yi in zip(x[keep], y[keep]))
    assert got / (expected[keep].sum() * enclosed) == pytest.approx(1.0, abs=0.003)
    # Cosmic rays hit every light (truth["cosmic_rays"]); where at least 5 frames cover a pixel
    # none survives: every pixel far above the sky lies in the light of a truth star (within
    # 6 px, or 16 px of a bright one).
    count = fits.getdata(path, "COUNT")
    noise = float(1.4826 * np.nanmedian(np.abs(image - sky)))
    assert sum(len(v) for k, v in t["cosmic_rays"].items() if "_V_" in k) > 20
    yy, xx = np.nonzero((image > sky + 10 * noise) & (count >= 5))
    dist = np.hypot(xx[:, None] - x[None, :], yy[:, None] - y[None, :])
    reach = np.where(expected > 3e4, 16.0, 6.0)
    lit = (dist < reach[None, :]).any(axis=1)
    assert lit.all(), list(zip(xx[~lit], yy[~lit]))


def test_rerun_reuses_and_refuses_changed_recipes(night, tmp_path):
    sample, out, result, _ = night
    before = {p: os.stat(p).st_mtime_ns for p in out.rglob("*.fits")}
    again = run_night(sample.directory, out, backend="cpu")
    assert {p.status for p in again.products} == {"reused"}
    assert before == {p: os.stat(p).st_mtime_ns for p in out.rglob("*.fits")}
    with pytest.raises(SkystackError, match="use --overwrite"):
        run_night(sample.directory, out, backend="cpu", method="median", reject="none")
    assert before == {p: os.stat(p).st_mtime_ns for p in out.rglob("*.fits")}


def test_interrupted_night_leaves_no_product_under_a_final_name(night, tmp_path, monkeypatch):
    sample, *_ = night
    import skystack.executor as executor

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(executor, "stack_frames", boom)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_night(sample.directory, out, backend="cpu", previews=False)
    assert (out / "masters" / "bias.fits").is_file()  # finished before the interruption
    assert not list((out / "stacks").glob("*.fits"))
    assert not [p for p in out.rglob("*") if ".partial" in p.name]


def test_cli_night_prints_the_table(night, tmp_path, capsys):
    sample, *_ = night
    code = main(["night", str(sample.directory), "-o", str(tmp_path / "o"), "--backend", "cpu",
                 "--no-previews"])
    assert code == 0
    text = capsys.readouterr().out
    assert "light" in text and "bias.fits" in text and "skipped" in text
