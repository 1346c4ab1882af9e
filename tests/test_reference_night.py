"""The independent astropy + ccdproc + reproject reduction (tests/reference_night.py) against
the truth of a generated night.

This validates the reference itself, so that "skystack agrees with the reference" means
something. The night: 256 x 320 pixels, 9 biases, 5 darks of 30 s and 5 of 60 s, 7 flats in
each of V and R, two targets with 7 lights per filter each (M67 at 90 s, which has no dark of
its exposure and needs the 60 s dark scaled by 1.5, and NGC 2548 at 60 s), dithered by up to
6 px and rotated by up to 2 degrees, cosmic rays in every light; seed 2.

Tolerances from the noise of these frame counts (read noise 5 ADU, gain 1.5 e-/ADU), with the
values measured on this night in brackets:

* master bias: per-pixel residual rms within 0.95-1.15 x 5 / sqrt(9) ADU (1.09: one
  sigma-clipping pass costs some efficiency); mean residual below 0.05 ADU (0.001);
* master darks: residual rms within 15 % of the expected noise of a median of 5 (3.3-3.4 ADU);
  in the 60 s dark all 82 hot pixels and nothing else more than 6 mad_std above the local
  level (a 5 x 5 running median, which follows the amplifier glow of one corner: above the
  global median that glow exceeds 5 mad_std on 1700 pixels; the largest other excess is
  5.4 mad_std), each within 30 % of truth (24 %: their own shot noise in 5 frames), median
  within 5 % (0.4 %);
* master flats: the per-pixel rms of master / truth - 1 is the flats' shot noise, 0.24-0.25 %
  for 7 flats of ~24000 ADU median-combined, so "within 0.3 %" holds for the rms (checked
  within 15 % of the expected value and < 0.3 %); 16 x 16 pixel means within 0.1 % (0.06 %);
  medians within 0.05 % (0.01 %); every pixel within 1.5 % (1.2 %);
* stack sky: within 0.3 % of the mean sky of the frames (-0.15 to +0.03 %), and within
  0.15 % of the offset expected from the clipping of frames whose sky differs
  (:func:`expected_clipped_sky`; differences of 0.01-0.07 %);
* stack stars, aperture sums (radius 10 px, truth sky subtracted) of isolated stars unsaturated
  in every frame, against the noiseless truth image on the same grid: above 1e5 ADU within
  0.3 % (-0.06 to +0.13 %, 4 stars); 2e4-1e5 ADU within 2 % (+0.40 %, 1 star; the clipping
  of the unresampled grid frame's star cores costs such stars up to ~2 %); centroids within
  0.05 px of the truth image's (<= 0.02 px);
* cosmic rays: at every cosmic-ray pixel of every light, mapped onto the stack grid, on sky
  (not on a star's wing, where the resampling residual dominates), the stack is below
  truth + 5 sigma of the stack (max 2.6 sigma over 1567 pixels; an unrejected hit would add
  >= 800 / 4 / 7 ~ 30 ADU, ~7 sigma).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std, sigma_clip
from astropy.wcs import WCS
from scipy.ndimage import median_filter

from skystack.demo_data import SampleNight, truth_image, write_sample_night
from tests.reference_night import (
    ReferenceProducts,
    choose_dark,
    exptime_label,
    first_light,
    product_name,
    reduce_night,
)

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

SHAPE = (256, 320)
N_BIAS, N_DARK, N_FLAT, N_LIGHT = 9, 5, 7, 7
NIGHT = dict(shape=SHAPE, n_bias=N_BIAS, n_dark=N_DARK, dark_exptimes=(30.0, 60.0),
             n_flat=N_FLAT, filters=("V", "R"), n_light=N_LIGHT, objects=("M67", "NGC 2548"),
             light_exptime={"M67": 90.0, "NGC 2548": 60.0}, dither_px=6.0, rotation_deg=2.0,
             seed=2)
# Pixels of the stack grid covered by every frame: dither sqrt(2) x 6 px, 2 deg at the corner
# of the frame (~4.4 px) and a pixel for the interpolation.
INNER = 16


@pytest.fixture(scope="module")
def reduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[SampleNight, ReferenceProducts]:
    root = tmp_path_factory.mktemp("reference-night")
    night = write_sample_night(root / "raw", **NIGHT)
    return night, reduce_night(root / "raw", root / "out")


def _groups() -> list[tuple[str, str]]:
    return [(obj, band) for obj in NIGHT["objects"] for band in NIGHT["filters"]]


def test_helpers() -> None:
    assert exptime_label(60.0) == "60" and exptime_label(2.5) == "2.5"
    assert product_name("NGC 2548", "V") == "NGC_2548_V"
    assert choose_dark(60.0, [30.0, 60.0]) == 60.0
    assert choose_dark(90.0, [30.0, 60.0]) == 60.0
    assert choose_dark(30.00001, [30.0, 60.0]) == 30.0
    assert choose_dark(2.0, [30.0, 60.0]) == 60.0  # no match: the longest, scaled


def test_products_and_grid(reduced: tuple[SampleNight, ReferenceProducts]) -> None:
    night, products = reduced
    out = products.bias.parent.parent
    assert products.bias == out / "masters" / "bias.fits"
    assert products.darks == {30.0: out / "masters" / "dark_30s.fits",
                              60.0: out / "masters" / "dark_60s.fits"}
    assert products.flats == {b: out / "masters" / f"flat_{b}.fits" for b in ("R", "V")}
    assert products.n_frames == {"bias": 9, "dark": 10, "flat": 14, "light": 28}
    for obj, band in _groups():
        path = products.stacks[(obj, band)]
        assert path == out / "stacks" / f"{product_name(obj, band)}.fits"
        # The grid is that of the group's first light frame, in acquisition order.
        lights = night.light_by_object[obj][band]
        assert products.grid_frame[(obj, band)] == lights[0] == first_light(lights[::-1])
        hdr = fits.getheader(path)
        assert hdr["NCOMBINE"] == N_LIGHT and hdr["OBJECT"] == obj and hdr["FILTER"] == band
        assert fits.getdata(path).shape == SHAPE
        ref = WCS(fits.getheader(lights[0]))
        assert np.allclose(WCS(hdr).wcs.crpix, ref.wcs.crpix)
        assert np.allclose(WCS(hdr).pixel_scale_matrix, ref.pixel_scale_matrix)
        for light in lights:
            # 90 s lights get the 60 s dark scaled by 1.5; the truth says they need scaling.
            assert products.dark_used[light.name] == 60.0
            assert night.truth["lights"][light.name]["dark_scaled"] == (obj == "M67")
    assert all(products.dark_used[p.name] == 60.0 for b in ("V", "R") for p in night.flat[b])
    assert products.seconds["total"] > 0


def test_master_bias(reduced: tuple[SampleNight, ReferenceProducts]) -> None:
    night, products = reduced
    t = night.truth
    residual = fits.getdata(products.bias) - (t["bias_level"] + t["bias_columns"][None, :])
    expected = t["read_noise"] / math.sqrt(N_BIAS)
    assert abs(residual.mean()) < 0.05
    assert 0.95 * expected < residual.std() < 1.15 * expected
    # The column pattern is recovered down to the noise of a column's mean.
    column_noise = 1.15 * expected / math.sqrt(SHAPE[0])
    assert np.std(residual.mean(axis=0)) < 1.5 * column_noise


def test_master_darks_and_hot_pixels(reduced: tuple[SampleNight, ReferenceProducts]) -> None:
    night, products = reduced
    t = night.truth
    hot = np.zeros(SHAPE, dtype=bool)
    hot[tuple(t["hot_pixels"].T)] = True
    for exptime, path in products.darks.items():
        dark = fits.getdata(path)
        truth = t["dark_current"] * exptime / t["gain"]
        residual = dark - truth
        assert abs(np.mean(residual[~hot])) < 0.1
        # Median of 5 darks (read noise and dark shot noise) plus the master bias' noise.
        per_frame = t["read_noise"] ** 2 + np.mean(truth[~hot]) / t["gain"]
        expected = math.sqrt(1.44 * per_frame / N_DARK + 1.2 * t["read_noise"] ** 2 / N_BIAS)
        assert np.std(residual[~hot]) == pytest.approx(expected, rel=0.15)
    dark = fits.getdata(products.darks[60.0])
    truth = t["dark_current"] * 60.0 / t["gain"]
    excess = dark - median_filter(dark, size=5)
    found = excess > 6 * mad_std(excess)
    assert np.array_equal(found, hot)
    rel = dark[hot] / truth[hot] - 1
    assert abs(np.median(rel)) < 0.05 and np.max(np.abs(rel)) < 0.3


def test_master_flats(reduced: tuple[SampleNight, ReferenceProducts]) -> None:
    night, products = reduced
    t = night.truth
    ny, nx = SHAPE
    for band in NIGHT["filters"]:
        flat = fits.getdata(products.flats[band])
        assert np.median(flat) == pytest.approx(1.0, abs=1e-9)
        ratio = flat / t["flat"][band] - 1
        electrons = t["flat_level"][band] * t["gain"]
        per_frame = np.sqrt(electrons + (t["read_noise"] * t["gain"]) ** 2) / electrons
        # A median of N values is ~1.2 x noisier than their mean at N = 7.
        expected = 1.2 * math.sqrt(np.mean(per_frame**2) / N_FLAT)
        assert ratio.std() == pytest.approx(expected, rel=0.15)
        assert ratio.std() < 0.003
        assert abs(np.median(ratio)) < 5e-4
        assert np.max(np.abs(ratio)) < 0.015
        blocks = ratio.reshape(ny // 16, 16, nx // 16, 16).mean(axis=(1, 3))
        assert np.max(np.abs(blocks)) < 1e-3
        # Vignetting and dust are really there to be corrected.
        assert np.ptp(t["flat"][band]) > 0.15


def _stack_and_model(night: SampleNight, products: ReferenceProducts, obj: str, band: str
                     ) -> tuple[np.ndarray, np.ndarray, WCS, float]:
    path = products.stacks[(obj, band)]
    stack = fits.getdata(path).astype(np.float64)
    wcs = WCS(fits.getheader(path))
    model = truth_image(night, obj, band, wcs, stack.shape)
    t = night.truth
    sky = np.mean([t["sky"][band] * t["lights"][p.name]["sky_scale"] * t["lights"][p.name][
        "exptime"] for p in night.light_by_object[obj][band]])
    return stack, model, wcs, float(sky)


def _centroid(data: np.ndarray, x: float, y: float, half: int = 5) -> tuple[float, float]:
    cx, cy = int(round(x)), int(round(y))
    win = data[cy - half:cy + half + 1, cx - half:cx + half + 1]
    off = np.arange(-half, half + 1)
    return (cx + (win.sum(axis=0) * off).sum() / win.sum(),
            cy + (win.sum(axis=1) * off).sum() / win.sum())


def expected_clipped_sky(night: SampleNight, obj: str, band: str, n: int = 20000) -> float:
    """Expected offset, ADU, of the sigma-clipped mean of the sky from the plain mean.

    The lights' sky levels differ by a few % (``sky_scale``): the median-centred clipping
    rejects the brightest frame's values more often and pulls the stack below the mean sky
    (by up to ~0.4 % when one frame is 3-4 sigma off). Monte Carlo of the reference's
    clipping with each frame's sky and noise: shot and read noise, the masters' noise (the
    dark scaled to the light's exposure), times the bilinear resampling's noise reduction
    for every frame but the grid's own.
    """
    t = night.truth
    rng = np.random.default_rng(0)
    names = [p.name for p in night.light_by_object[obj][band]]
    sky = np.array([t["sky"][band] * t["lights"][m]["sky_scale"] * t["lights"][m]["exptime"]
                    for m in names])
    exptime = t["lights"][names[0]]["exptime"]
    rn, gain, t_dark = t["read_noise"], t["gain"], 60.0
    var_bias = (1.09 * rn) ** 2 / N_BIAS
    var_dark = 1.44 * (rn**2 + np.median(t["dark_current"]) * t_dark / gain**2) / N_DARK
    var = sky / gain + rn**2 + var_bias + (var_dark + var_bias) * (exptime / t_dark) ** 2
    u = rng.random((2, len(names), n))
    smooth = ((1 - u[0]) ** 2 + u[0] ** 2) * ((1 - u[1]) ** 2 + u[1] ** 2)
    smooth[0] = 1.0
    cube = sky[:, None] + rng.standard_normal((len(names), n)) * np.sqrt(var[:, None] * smooth)
    kept = sigma_clip(cube, sigma=3, maxiters=5, cenfunc="median", stdfunc="mad_std", axis=0)
    return float(np.median(np.ma.filled(kept.mean(axis=0), np.nan)) - sky.mean())


def test_stack_sky_level(reduced: tuple[SampleNight, ReferenceProducts]) -> None:
    night, products = reduced
    for obj, band in _groups():
        stack, model, _, sky = _stack_and_model(night, products, obj, band)
        inner = (slice(INNER, -INNER), slice(INNER, -INNER))
        assert np.isfinite(stack[inner]).all()
        on_sky = np.zeros(SHAPE, dtype=bool)
        on_sky[inner] = model[inner] - sky < 1.0
        offset = float(np.median((stack - model)[on_sky]))
        assert abs(offset) < 0.003 * sky
        assert offset == pytest.approx(expected_clipped_sky(night, obj, band), abs=0.0015 * sky)


def test_stack_star_fluxes_and_positions(reduced: tuple[SampleNight, ReferenceProducts]
                                         ) -> None:
    night, products = reduced
    t = night.truth
    beta, gain = t["moffat_beta"], t["gain"]
    radius = 10.0
    bright, faint = [], []
    for obj, band in _groups():
        stack, model, wcs, sky = _stack_and_model(night, products, obj, band)
        fld = t["objects"][obj]
        px, py = wcs.world_to_pixel_values(fld["stars"]["ra"], fld["stars"]["dec"])
        counts = fld["star_flux"][band] * fld["light_exptime"]  # e- per frame
        # Peak pixel in the best-seeing frame, to leave out stars saturated in any frame.
        fwhm = min(t["lights"][p.name]["fwhm"] for p in night.light_by_object[obj][band])
        alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
        peak = 1.1 * ((beta - 1) / (math.pi * alpha**2) * counts / gain + sky) + 1000
        yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
        edge = radius + INNER
        for k in np.flatnonzero((counts / gain > 2e4) & (peak < 6e4)):
            if not (edge < px[k] < SHAPE[1] - 1 - edge and edge < py[k] < SHAPE[0] - 1 - edge):
                continue
            dist = np.hypot(px - px[k], py - py[k])
            if np.any((dist > 0) & (dist < 2 * radius + 6) & (counts > 0.01 * counts[k])):
                continue
            aperture = np.hypot(yy - py[k], xx - px[k]) < radius
            star = np.sum(model[aperture] - sky)
            error = np.sum(stack[aperture] - model[aperture]) / star
            (bright if star > 1e5 else faint).append(error)
            xs, ys = _centroid(stack - sky, px[k], py[k])
            xm, ym = _centroid(model - sky, px[k], py[k])
            assert math.hypot(xs - xm, ys - ym) < 0.05
    assert len(bright) >= 3 and len(faint) >= 1
    assert np.max(np.abs(bright)) < 0.003
    # Fainter stars lose up to ~2 % to the clipping: the grid's own frame is not smoothed by
    # resampling, so its star cores stand out of the others' and get clipped.
    assert np.max(np.abs(faint)) < 0.02


def test_cosmic_rays_removed(reduced: tuple[SampleNight, ReferenceProducts]) -> None:
    night, products = reduced
    t = night.truth
    checked = 0
    for obj, band in _groups():
        stack, model, wcs, sky = _stack_and_model(night, products, obj, band)
        sigma = np.sqrt(np.clip(model, 0, None) / t["gain"] + t["read_noise"] ** 2) / math.sqrt(
            N_LIGHT)
        on_sky = model - sky < 3 * sigma * math.sqrt(N_LIGHT)
        for light in night.light_by_object[obj][band]:
            hits = t["cosmic_rays"][light.name]
            ra, dec = t["lights"][light.name]["wcs"].pixel_to_world_values(hits[:, 1],
                                                                          hits[:, 0])
            x, y = wcs.world_to_pixel_values(ra, dec)
            # The 2 x 2 stack pixels around each hit take part of it in the interpolation.
            for dy in (0, 1):
                for dx in (0, 1):
                    iy = np.floor(y).astype(int) + dy
                    ix = np.floor(x).astype(int) + dx
                    ok = (iy >= 0) & (iy < SHAPE[0]) & (ix >= 0) & (ix < SHAPE[1])
                    iy, ix = iy[ok], ix[ok]
                    ok = on_sky[iy, ix] & np.isfinite(stack[iy, ix])
                    iy, ix = iy[ok], ix[ok]
                    excess = (stack[iy, ix] - model[iy, ix]) / sigma[iy, ix]
                    assert np.all(excess < 5), (light.name, excess.max())
                    checked += iy.size
    assert checked >= 100


def test_other_grids(tmp_path: Path) -> None:
    night = write_sample_night(tmp_path / "raw", shape=(48, 64), n_bias=3, n_dark=2,
                               n_flat=2, filters=("B", "V"), n_light=3, dither_px=3.0,
                               rotation_deg=2.0)
    by_object = reduce_night(tmp_path / "raw", tmp_path / "object", grid="object")
    first = night.light["B"][0]
    assert by_object.grid_frame == {("M67", "B"): first, ("M67", "V"): first}
    grid = WCS(fits.getheader(first))
    for path in by_object.stacks.values():
        assert np.allclose(WCS(fits.getheader(path)).wcs.crpix, grid.wcs.crpix)
    optimal = reduce_night(tmp_path / "raw", tmp_path / "optimal", grid="optimal")
    assert optimal.grid_frame == {}
    for path in optimal.stacks.values():
        # The optimal grid covers every frame: it is larger than one frame.
        ny, nx = fits.getdata(path).shape
        assert ny > 48 and nx > 64
    with pytest.raises(ValueError, match="grid"):
        reduce_night(tmp_path / "raw", tmp_path / "bad", grid="nearest")


def test_script_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.reference_night import main

    write_sample_night(tmp_path / "raw", shape=(32, 48), n_bias=3, n_dark=2, n_flat=2,
                       filters=("B",), n_light=3, dither_px=2.0, overscan=4)
    assert main([str(tmp_path / "raw"), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "reduced in" in printed and "stack M67 B" in printed
    # Overscan columns are trimmed away (TRIMSEC) before anything else.
    assert fits.getdata(tmp_path / "out" / "masters" / "bias.fits").shape == (32, 48)
    assert fits.getdata(tmp_path / "out" / "stacks" / "M67_B.fits").shape == (32, 48)
