"""Tests of the synthetic night generator :mod:`skystack.demo_data`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skystack.demo_data import SampleNight, write_sample_night

SHAPE = (256, 224)


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> SampleNight:
    return write_sample_night(tmp_path_factory.mktemp("night") / "raw", shape=SHAPE,
                              n_bias=3, n_dark=2, dark_exptime=30.0, n_flat=2,
                              filters=("V", "R"), n_light=3, light_exptime=60.0,
                              dither_px=4.0, seed=7)


def _all_paths(night: SampleNight) -> list[Path]:
    paths = list(night.bias) + list(night.dark)
    for group in (night.flat, night.light):
        for files in group.values():
            paths += files
    return paths


def _calibrate(night: SampleNight, path: Path) -> np.ndarray:
    """Raw frame minus the true bias and dark, ADU."""
    t = night.truth
    data = fits.getdata(path).astype(np.float64)
    exptime = fits.getheader(path)["EXPTIME"]
    bias = t["bias_level"] + t["bias_columns"][None, :]
    return data - bias - t["dark_current"] * exptime / t["gain"]


def test_files_layout_and_storage(night: SampleNight) -> None:
    assert [p.name for p in night.bias] == ["bias_001.fits", "bias_002.fits", "bias_003.fits"]
    assert [p.name for p in night.dark] == ["dark_030s_001.fits", "dark_030s_002.fits"]
    assert [p.name for p in night.flat["R"]] == ["flat_R_001.fits", "flat_R_002.fits"]
    assert night.light["V"][2].name == "light_M67_V_003.fits"
    for path in _all_paths(night):
        assert path.is_file() and path.parent == night.directory
        with fits.open(path, do_not_scale_image_data=True) as hdul:
            hdr = hdul[0].header
            assert hdr["BITPIX"] == 16 and hdr["BZERO"] == 32768 and hdr["BSCALE"] == 1
            assert hdul[0].data.dtype.kind == "i" and hdul[0].data.shape == SHAPE
        with fits.open(path) as hdul:
            assert hdul[0].data.dtype == np.uint16


def test_headers(night: SampleNight) -> None:
    kinds = {"Bias Frame": night.bias, "Dark Frame": night.dark,
             "Flat Field": sum(night.flat.values(), []),
             "Light Frame": sum(night.light.values(), [])}
    for imagetyp, paths in kinds.items():
        for path in paths:
            hdr = fits.getheader(path)
            assert hdr["IMAGETYP"] == imagetyp
            assert hdr["GAIN"] == night.truth["gain"]
            assert hdr["RDNOISE"] == pytest.approx(night.truth["read_noise"] * hdr["GAIN"])
            assert hdr["CCD-TEMP"] == -10
            assert hdr["XBINNING"] == hdr["YBINNING"] == 1
            assert hdr["INSTRUME"] == "skystack synthetic camera" and hdr["TELESCOP"]
    assert fits.getheader(night.bias[0])["EXPTIME"] == 0.0
    assert fits.getheader(night.dark[0])["EXPTIME"] == 30.0
    for band in ("V", "R"):
        assert fits.getheader(night.flat[band][0])["FILTER"] == band
        hdr = fits.getheader(night.light[band][1])
        assert (hdr["FILTER"], hdr["OBJECT"], hdr["EXPTIME"]) == (band, "M67", 60.0)
        assert hdr["CTYPE1"] == "RA---TAN" and hdr["CTYPE2"] == "DEC--TAN"
    # Acquisition order: each exposure starts after the previous one and its readout.
    starts, ends = [], []
    for path in _all_paths(night):
        hdr = fits.getheader(path)
        start = datetime.fromisoformat(hdr["DATE-OBS"])
        starts.append(start)
        ends.append(start.timestamp() + hdr["EXPTIME"])
    assert starts[0] == datetime(2026, 3, 14, 20, 0, 0)
    gaps = np.array([s.timestamp() for s in starts[1:]]) - np.array(ends[:-1])
    assert np.all(gaps >= 5.0)


def test_bias_level_and_column_pattern(night: SampleNight) -> None:
    t = night.truth
    stack = np.stack([fits.getdata(p).astype(np.float64) for p in night.bias])
    assert np.median(stack[0]) == pytest.approx(t["bias_level"], abs=1.0)
    assert np.std(stack[0] - t["bias_columns"][None, :]) == pytest.approx(t["read_noise"],
                                                                            rel=0.05)
    column_means = stack.mean(axis=(0, 1)) - t["bias_level"]
    assert np.std(column_means - t["bias_columns"]) < 0.3
    assert np.ptp(t["bias_columns"]) > 2.0


def test_dark_hot_pixels(night: SampleNight) -> None:
    t = night.truth
    data = fits.getdata(night.dark[0]).astype(np.float64)
    med = np.median(data)
    expected = t["bias_level"] + np.median(t["dark_current"]) * 30.0 / t["gain"]
    assert med == pytest.approx(expected, abs=1.5)
    hot_y, hot_x = t["hot_pixels"].T
    assert len(hot_y) == pytest.approx(1e-3 * data.size, abs=1)
    excess = data[hot_y, hot_x] - med
    # Hot pixels run 10-100x the normal 0.1 e-/s: 20-200 ADU in 30 s.
    assert np.median(excess) > 5 * t["read_noise"]
    assert excess.max() > 20 * t["read_noise"]
    expected = (t["dark_current"][hot_y, hot_x] - np.median(t["dark_current"])) * 30.0 / t["gain"]
    assert np.median(excess / expected) == pytest.approx(1.0, abs=0.15)
    hottest = np.argmax(expected)
    assert excess[hottest] == pytest.approx(expected[hottest], rel=0.25)


def test_flat_follows_truth_and_vignetting(night: SampleNight) -> None:
    t = night.truth
    for band in ("V", "R"):
        truth_flat = t["flat"][band]
        assert np.median(truth_flat) == pytest.approx(1.0, abs=1e-6)
        for i, path in enumerate(night.flat[band]):
            level = t["flat_level"][band][i]
            assert 20000 <= level <= 30000
            ratio = _calibrate(night, path) / truth_flat
            assert np.median(ratio) == pytest.approx(level, rel=2e-3)
            # Nothing but shot and read noise is left once the truth flat is divided out.
            noise = np.sqrt(level / t["gain"] + t["read_noise"] ** 2)
            assert np.std(ratio) == pytest.approx(noise, rel=0.05)
        data = _calibrate(night, night.flat[band][0])
        vig = t["vignetting"][band]
        ny, nx = SHAPE
        centre = (slice(ny // 2 - 8, ny // 2 + 8), slice(nx // 2 - 8, nx // 2 + 8))
        for corner in ((slice(0, 8), slice(0, 8)), (slice(-8, None), slice(-8, None))):
            measured = np.median(data[corner]) / np.median(data[centre])
            falloff = np.median(vig[corner]) / np.median(vig[centre])
            assert 0.8 < falloff < 0.92
            assert measured == pytest.approx(falloff, abs=0.04)
    assert not np.allclose(t["flat"]["V"], t["flat"]["R"])


def test_light_wcs_matches_stars(night: SampleNight) -> None:
    t = night.truth
    stars = t["stars"]
    ny, nx = SHAPE
    checked = 0
    for band in ("V", "R"):
        flux = t["star_flux"][band]
        dithers = t["dither"][band]
        for i, path in enumerate(night.light[band]):
            if np.hypot(*dithers[i]) < 1.0:
                continue
            # The true bias and dark take out hot pixels, which would pass for faint stars.
            data = _calibrate(night, path) / t["flat"][band]
            data -= np.median(data)
            cosmic = np.zeros(SHAPE, dtype=bool)
            cosmic[tuple(t["cosmic_rays"][path.name].T)] = True
            wcs = WCS(fits.getheader(path))
            px, py = wcs.world_to_pixel_values(stars["ra"], stars["dec"])
            assert np.allclose(px, stars["x"] + dithers[i, 1], atol=1e-6)
            assert np.allclose(py, stars["y"] + dithers[i, 0], atol=1e-6)
            for k in np.argsort(flux)[::-1]:
                # Well-exposed, unsaturated, isolated stars well inside the frame.
                if not 200 < flux[k] < 10000:
                    continue
                if not (12 <= px[k] < nx - 12 and 12 <= py[k] < ny - 12):
                    continue
                dist = np.hypot(px - px[k], py - py[k])
                if np.any((dist > 0) & (dist < 10) & (flux > 0.02 * flux[k])):
                    continue
                cy, cx = int(round(py[k])), int(round(px[k]))
                if cosmic[cy - 5:cy + 6, cx - 5:cx + 6].any():
                    continue
                win = data[cy - 3:cy + 4, cx - 3:cx + 4]
                my, mx = np.unravel_index(np.argmax(win), win.shape)
                my, mx = cy - 3 + my, cx - 3 + mx
                box = np.clip(data[my - 2:my + 3, mx - 2:mx + 3], 0, None)
                off = np.arange(-2, 3)
                yc = my + (box.sum(axis=1) * off).sum() / box.sum()
                xc = mx + (box.sum(axis=0) * off).sum() / box.sum()
                assert np.hypot(mx - px[k], my - py[k]) < 1.0
                assert np.hypot(xc - px[k], yc - py[k]) < 0.5
                checked += 1
    assert checked >= 2


def test_cosmic_rays_are_bright(night: SampleNight) -> None:
    for path in night.light["V"]:
        hits = night.truth["cosmic_rays"][path.name]
        assert 1 <= len(hits)
        data = fits.getdata(path).astype(np.float64)
        assert np.all(data[hits[:, 0], hits[:, 1]] - np.median(data) > 500)


def test_undithered_and_reproducible(tmp_path: Path) -> None:
    kwargs = dict(shape=(48, 64), n_bias=1, n_dark=1, n_flat=1, filters=("B",), n_light=3)
    a = write_sample_night(tmp_path / "a", **kwargs)
    b = write_sample_night(tmp_path / "b", **kwargs)
    assert np.all(a.truth["dither"]["B"] == 0)
    crpix = {(fits.getheader(p)["CRPIX1"], fits.getheader(p)["CRPIX2"]) for p in a.light["B"]}
    assert crpix == {(32.5, 24.5)}
    for pa, pb in zip(a.light["B"] + a.bias, b.light["B"] + b.bias, strict=True):
        assert np.array_equal(fits.getdata(pa), fits.getdata(pb))
    c = write_sample_night(tmp_path / "a", **kwargs, seed=1)
    assert c.light["B"][0] == a.light["B"][0]
    assert not np.array_equal(fits.getdata(c.light["B"][0]), fits.getdata(b.light["B"][0]))
