"""Single-frame cosmic-ray masking (skystack.cosmetics.cosmic_rays, LA Cosmic): injected hits
are found, star cores are not, and the masks equal astroscrappy.detect_cosmics called directly
(the independent reference); the combination leaves the masked pixels out."""

from __future__ import annotations

import os

import astroscrappy
import numpy as np
import pytest
from astropy.io import fits
from scipy.ndimage import binary_dilation
from tiny_night import write_lights

from skystack import combine
from skystack.cli import main
from skystack.cosmetics.cosmic_rays import CosmicRayOptions, detect
from skystack.errors import SkystackError
from skystack.night.run import run_night

SHAPE = (128, 128)
GAIN, RDNOISE, SKY = 2.0, 5.0, 400.0


def _scene(seed: int):
    """A frame (ADU) of Gaussian stars (FWHM 3.5 px) on a sky with shot and read noise, and
    cosmic-ray hits of 1-3 pixels away from the stars; returns (frame, truth of the hits,
    star centres)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    sigma = 3.5 / 2.355
    # Isolated stars (a jittered 5 x 5 grid): LA Cosmic can flag the cores of blends closer
    # than about two FWHM, which this test does not claim to protect.
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(5), indexing="ij"), -1).reshape(-1, 2)
    stars = 14 + 25 * grid + rng.uniform(-3, 3, (25, 2))
    expected = np.full(SHAPE, SKY)
    for (y, x), peak in zip(stars, rng.uniform(500, 15000, len(stars))):
        expected += peak * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2))
    electrons = rng.poisson(expected * GAIN) + rng.normal(0, RDNOISE, SHAPE)
    frame = (electrons / GAIN).astype(np.float32)
    hits = np.zeros(SHAPE, bool)
    shapes = [[(0, 0)], [(0, 0), (0, 1)], [(0, 0), (1, 0)], [(0, 0), (0, 1), (1, 1)]]
    placed = 0
    while placed < 30:
        y, x = rng.integers(3, SHAPE[0] - 4, 2)
        if np.min(np.hypot(stars[:, 0] - y, stars[:, 1] - x)) < 8 or hits[y - 2:y + 3,
                                                                           x - 2:x + 3].any():
            continue
        for dy, dx in shapes[placed % len(shapes)]:
            frame[y + dy, x + dx] += rng.uniform(800, 5000)
            hits[y + dy, x + dx] = True
        placed += 1
    return frame, hits, stars


def _reference(frame):
    mask, _ = astroscrappy.detect_cosmics(frame, sigclip=4.5, objlim=5.0, gain=GAIN,
                                          readnoise=RDNOISE,
                                          satlevel=float(np.finfo(np.float32).max))
    return mask


def test_hits_are_found_and_star_cores_are_not():
    frame, hits, stars = _scene(1)
    found = detect(frame, GAIN, RDNOISE, CosmicRayOptions("lacosmic"))
    np.testing.assert_array_equal(found, _reference(frame))  # the library, called directly
    assert found[hits].mean() >= 0.9  # recall
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    cores = np.zeros(SHAPE, bool)
    for y, x in stars:
        cores |= np.hypot(yy - y, xx - x) <= 2.0
    assert found[cores].mean() <= 0.01  # star cores kept
    # Elsewhere, only the hits' own neighbours (LA Cosmic grows each detection by design).
    near_hits = binary_dilation(hits, np.ones((3, 3), bool))
    assert (found & ~near_hits).sum() <= 3


def test_nan_pixels_are_never_flagged_and_do_not_break_detection():
    frame, hits, _ = _scene(2)
    frame[10:12, :] = np.nan  # a masked bad row
    found = detect(frame, GAIN, RDNOISE, CosmicRayOptions("lacosmic"))
    assert not found[10:12].any()
    assert found[hits].mean() >= 0.9


def test_combine_leaves_each_frames_hits_out(tmp_path):
    frames = [_scene(10 + k)[0] for k in range(3)]
    paths = []
    for k, data in enumerate(frames):
        path = os.fspath(tmp_path / f"f{k}.fits")
        fits.PrimaryHDU(data, header=fits.Header([("GAIN", GAIN), ("RDNOISE", RDNOISE)])
                        ).writeto(path)
        paths.append(path)
    masks = np.array([_reference(f) for f in frames])
    out = tmp_path / "m.fits"
    ccd = combine(paths, out, method="mean", reject="none", backend="cpu",
                  cosmic_rays="lacosmic")
    cube = np.where(masks, np.nan, np.array(frames))
    with np.errstate(invalid="ignore"):
        expected = np.nanmean(cube, axis=0)
    np.testing.assert_allclose(ccd.data, expected, rtol=1e-5)
    np.testing.assert_array_equal(ccd.count, 3 - masks.sum(axis=0))
    header = fits.getheader(out)
    assert header["CRMETHOD"] == "lacosmic" and header["CRFRAMES"] == 3
    assert header["CRNPIX"] == masks.sum()
    history = " ".join(header["HISTORY"])
    assert all(f"f{k}.fits: {masks[k].sum()} cosmic-ray pixels" in history for k in range(3))


def test_without_the_option_nothing_is_masked(tmp_path):
    frame, hits, _ = _scene(3)
    ccd = combine([frame, frame + 1], method="mean", reject="none", backend="cpu")
    np.testing.assert_allclose(ccd.data, frame + 0.5, rtol=1e-6)
    assert "CRMETHOD" not in ccd.meta


def test_missing_gain_is_a_one_line_error(tmp_path, capsys):
    path = os.fspath(tmp_path / "nogain.fits")
    fits.PrimaryHDU(_scene(4)[0]).writeto(path)
    assert main(["combine", path, path, "-o", str(tmp_path / "o.fits"), "--cosmic-rays",
                 "lacosmic", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nogain.fits" in err and "GAIN" in err


@pytest.mark.parametrize("bad", [dict(cosmic_rays="lacosmic", cr_sigclip=0.0),
                                 dict(cosmic_rays="lacosmic", cr_objlim=float("nan")),
                                 dict(cosmic_rays="astro")])
def test_bad_options_are_refused(bad):
    with pytest.raises(SkystackError):
        combine([np.zeros((8, 8), np.float32)] * 2, **bad)


def test_night_masks_hits_in_each_light_before_its_stack(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    paths = write_lights(raw, "light", "M1", "V", n=3)
    for k, p in enumerate(paths):
        with fits.open(p, mode="update") as hdul:
            hdul[0].header["GAIN"], hdul[0].header["RDNOISE"] = 1.0, 3.0
            if k == 0:
                hdul[0].data[20, 20] += 3000.0
                hdul[0].data[40, 41:43] += 2000.0
    out = tmp_path / "out"
    run_night(raw, out, backend="cpu", previews=False, reject="none", align="wcs",
              cosmic_rays="lacosmic")
    (stack,) = list((out / "stacks").glob("*.fits"))
    with fits.open(stack) as hdul:
        count = hdul["COUNT"].data
        assert count[20, 20] == 2 and count[40, 41] == 2 and count[40, 42] == 2
        assert hdul[0].header["CRFRAMES"] == 3 and hdul[0].header["CRNPIX"] >= 3
        assert abs(hdul[0].data[20, 20] - 1000.0) < 20  # the hit is not in the stack
