"""Tests of the synthetic night generator :mod:`skystack.demo_data`."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skystack.demo_data import SampleNight, truth_image, write_sample_night

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


def test_amp_glow_grows_with_exposure_time(rich: SampleNight) -> None:
    """The corner next to the amplifier glows, 40x the dark current at the corner pixel and
    falling off exponentially, and the glow scales with exposure time like the dark current."""
    t = rich.truth
    ny, nx = RICH["shape"]
    glow = t["amp_glow"]
    assert glow[ny - 1, 0] == pytest.approx(40 * 0.1, rel=1e-6)  # e-/s
    assert glow[ny - 1, 0] > 10 * np.median(t["dark_current"]) and glow[0, nx - 1] < 1e-3
    # Part of the dark current; the rest is the ordinary one (hot pixels aside).
    hot = np.zeros((ny, nx), bool)
    hot[tuple(t["hot_pixels"].T)] = True
    rest = (t["dark_current"] - glow)[~hot]
    assert np.median(rest) == pytest.approx(0.1, rel=0.02) and np.max(rest) < 0.2
    # In the frames: dark(60 s) - dark(30 s) is 30 s of current, glow included. The overscan
    # holds no glow.
    d30, d60 = (np.mean([fits.getdata(p).astype(np.float64) for p in rich.dark_by_exptime[t_]],
                        axis=0) for t_ in (30.0, 60.0))
    corner = (slice(ny - 6, ny), slice(0, 6))
    expected = float(np.mean(t["dark_current"][corner])) * 30.0 / t["gain"]
    assert expected > 30
    assert float(np.mean((d60 - d30)[corner])) == pytest.approx(expected, rel=0.1)
    assert abs(float(np.mean(d60[:, nx:] - d30[:, nx:]))) < 0.5


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


# --- options of multi-exposure, multi-target, rotated and overscanned nights ------------------

def _files_sha256(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.fits")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


# SHA-256 of every file (name and bytes, sorted by name) written by write_sample_night before
# the dark_exptimes / objects / rotation_deg / overscan options existed, updated once when the
# camera got its realistic amplifier glow (astropy 8.0.2, numpy 2.4.6): the defaults must keep
# writing exactly these bytes.
_DEFAULT_HASHES = [
    ({"shape": (64, 48)},
     "9c27cea7822453dc1ea2ce8bf789c58b4a4c7cb9f6d168e11e3df8da0fec365a"),
    ({"shape": (64, 80), "n_bias": 2, "n_dark": 2, "dark_exptime": 30.0, "n_flat": 2,
      "filters": ("V", "R"), "n_light": 3, "dither_px": 3.0, "seed": 5,
      "object_name": "NGC 2682", "light_exptime": 45.0},
     "e72df967baf4690632619e95225adcb8573aab85de673320f1e32dceafe092d2"),
    ({}, "9edcc4bd1d176ac3df80e1b4809fdd0d05783ce739d38ea370451752ed23d46d"),  # the demo's
]


@pytest.mark.parametrize("kwargs,expected", _DEFAULT_HASHES,
                         ids=["small-defaults", "dithered-two-filters", "demo-defaults"])
def test_defaults_write_the_same_bytes_as_before(tmp_path: Path, kwargs: dict,
                                                 expected: str) -> None:
    night = write_sample_night(tmp_path, **kwargs)
    assert _files_sha256(tmp_path) == expected
    assert night.truth["overscan"] == 0 and night.truth["biassec"] is None
    assert all(np.all(r == 0) for r in night.truth["rotation"].values())


RICH = dict(shape=(128, 160), n_bias=2, n_dark=2, dark_exptimes=(30.0, 60.0), n_flat=1,
            filters=("V", "R"), n_light=4, objects=("M67", "NGC 2548"),
            light_exptime={"M67": 90.0, "NGC 2548": 60.0}, dither_px=5.0, rotation_deg=3.0,
            seed=11)


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> SampleNight:
    return write_sample_night(tmp_path_factory.mktemp("rich") / "raw", overscan=8, **RICH)


def test_several_dark_exposures_and_targets(rich: SampleNight) -> None:
    t = rich.truth
    assert t["dark_exptimes"] == (30.0, 60.0)
    assert {k: [p.name for p in v] for k, v in rich.dark_by_exptime.items()} == {
        30.0: ["dark_030s_001.fits", "dark_030s_002.fits"],
        60.0: ["dark_060s_001.fits", "dark_060s_002.fits"]}
    assert rich.dark == rich.dark_by_exptime[30.0] + rich.dark_by_exptime[60.0]
    for exptime, paths in rich.dark_by_exptime.items():
        assert all(fits.getheader(p)["EXPTIME"] == exptime for p in paths)
    assert list(rich.light_by_object) == ["M67", "NGC 2548"]
    assert rich.light_by_object["NGC 2548"]["R"][0].name == "light_NGC_2548_R_001.fits"
    assert rich.light["V"] == rich.light_by_object["M67"]["V"] + rich.light_by_object[
        "NGC 2548"]["V"]
    centres = []
    for obj, exptime in (("M67", 90.0), ("NGC 2548", 60.0)):
        fld = t["objects"][obj]
        assert fld["light_exptime"] == exptime
        centres.append((fld["ra"], fld["dec"]))
        for band in ("V", "R"):
            for i, path in enumerate(rich.light_by_object[obj][band]):
                hdr = fits.getheader(path)
                assert (hdr["OBJECT"], hdr["FILTER"], hdr["EXPTIME"]) == (obj, band, exptime)
                info = t["lights"][path.name]
                assert (info["object"], info["filter"], info["index"]) == (obj, band, i)
                # 90 s lights have no 90 s dark: a master dark must be scaled.
                assert info["dark_exptime"] == (None if exptime == 90.0 else 60.0)
                assert info["dark_scaled"] is (exptime == 90.0)
    assert centres[0] == (132.825, 11.8)
    # The second field is well away from the first: no star in common.
    sep = np.hypot((centres[1][0] - centres[0][0]) * np.cos(np.radians(11.8)),
                   centres[1][1] - centres[0][1])
    assert 0.3 < sep < 0.5
    assert not np.array_equal(t["objects"]["M67"]["stars"]["flux"],
                              t["objects"]["NGC 2548"]["stars"]["flux"])
    # The first target's truth is also at the top level, as for single-target nights.
    assert t["stars"] is t["objects"]["M67"]["stars"]
    assert t["rotation"] is t["objects"]["M67"]["rotation"]


def test_overscan_sections(rich: SampleNight, tmp_path: Path) -> None:
    t = rich.truth
    ny, nx = RICH["shape"]
    assert t["overscan"] == 8
    assert t["datasec"] == "[1:160,1:128]" and t["biassec"] == "[161:168,1:128]"
    for path in [rich.bias[0], rich.dark[-1], rich.flat["R"][0], rich.light["V"][-1]]:
        hdr = fits.getheader(path)
        assert (hdr["NAXIS1"], hdr["NAXIS2"]) == (nx + 8, ny)
        assert hdr["BIASSEC"] == t["biassec"]
        assert hdr["TRIMSEC"] == hdr["DATASEC"] == t["datasec"]
        over = fits.getdata(path)[:, nx:].astype(np.float64)
        # Bias level and read noise only: no column pattern, no dark current, no light.
        assert over.mean() == pytest.approx(t["bias_level"], abs=0.5)
        assert over.std() == pytest.approx(t["read_noise"], rel=0.1)
    # The data section is the same with or without overscan columns.
    plain = write_sample_night(tmp_path, **RICH)
    for a, b in [(rich.bias[1], plain.bias[1]), (rich.light["R"][-1], plain.light["R"][-1])]:
        assert np.array_equal(fits.getdata(a)[:, :nx], fits.getdata(b))
        assert "BIASSEC" not in fits.getheader(b)


def _centroid(data: np.ndarray, x: float, y: float, half: int = 6) -> tuple[float, float]:
    """First moment in a (2 half + 1)^2 window, re-centred until it settles."""
    for _ in range(5):
        cx, cy = int(round(x)), int(round(y))
        win = data[cy - half:cy + half + 1, cx - half:cx + half + 1]
        off = np.arange(-half, half + 1)
        x = cx + (win.sum(axis=0) * off).sum() / win.sum()
        y = cy + (win.sum(axis=1) * off).sum() / win.sum()
    return x, y


def test_rotation_in_stars_and_wcs(rich: SampleNight) -> None:
    t = rich.truth
    ny, nx = RICH["shape"]
    centre = np.array([(nx - 1) / 2, (ny - 1) / 2])
    measured = []
    for obj in RICH["objects"]:
        fld = t["objects"][obj]
        stars = fld["stars"]
        for band in RICH["filters"]:
            rot = fld["rotation"][band]
            assert np.all(np.abs(rot) <= 3.0)
            for i, path in enumerate(rich.light_by_object[obj][band]):
                info = t["lights"][path.name]
                assert info["rotation"] == rot[i]
                assert np.array_equal(info["dither"], fld["dither"][band][i])
                hdr = fits.getheader(path)
                wcs = WCS(hdr)
                theta = np.radians(rot[i])
                if rot[i] == 0.0:
                    assert band == RICH["filters"][0] and i == 0  # the target's reference
                    assert "PC1_1" not in hdr
                else:
                    # PC = R(-theta): the position angle of the frame is theta.
                    assert np.degrees(np.arctan2(hdr["PC1_2"], hdr["PC1_1"])) == \
                        pytest.approx(rot[i], abs=1e-9)
                    assert np.allclose(wcs.wcs.get_pc(), info["wcs"].wcs.get_pc())
                # Truth star positions through the header WCS = the documented geometry.
                px, py = wcs.world_to_pixel_values(stars["ra"], stars["dec"])
                rel = np.stack([stars["x"], stars["y"]]) - centre[:, None]
                c, s = np.cos(theta), np.sin(theta)
                dy, dx = info["dither"]
                ex = centre[0] + c * rel[0] - s * rel[1] + dx
                ey = centre[1] + s * rel[0] + c * rel[1] + dy
                assert np.allclose(px, ex, atol=1e-6) and np.allclose(py, ey, atol=1e-6)
                # ... and where the brightest well-placed isolated star is really drawn.
                data = fits.getdata(path)[:, :nx].astype(np.float64)
                exptime = info["exptime"]
                data -= t["bias_level"] + t["bias_columns"][None, :]
                data -= t["dark_current"] * exptime / t["gain"]
                data /= t["flat"][band]
                data -= t["sky"][band] * info["sky_scale"] * exptime
                flux = fld["star_flux"][band]
                cosmic = np.zeros((ny, nx), dtype=bool)
                cosmic[tuple(t["cosmic_rays"][path.name].T)] = True
                peak_e = flux * exptime * 0.08  # peak pixel of a FWHM 2.2 px Moffat, roughly
                for k in np.argsort(flux)[::-1]:
                    if peak_e[k] / t["gain"] > 40000 or flux[k] * exptime < 2e4:
                        continue
                    if not (10 <= px[k] < nx - 10 and 10 <= py[k] < ny - 10):
                        continue
                    dist = np.hypot(px - px[k], py - py[k])
                    if np.any((dist > 0) & (dist < 14) & (flux > 0.01 * flux[k])):
                        continue
                    cy, cx = int(round(py[k])), int(round(px[k]))
                    if cosmic[cy - 8:cy + 9, cx - 8:cx + 9].any():
                        continue
                    xc, yc = _centroid(data, px[k], py[k])
                    measured.append(np.hypot(xc - px[k], yc - py[k]))
                    break
    assert len(measured) >= 8
    assert max(measured) < 0.2


def test_new_options_are_deterministic(tmp_path: Path) -> None:
    kwargs = dict(RICH, shape=(48, 64), n_light=2)
    a = write_sample_night(tmp_path / "a", overscan=4, **kwargs)
    b = write_sample_night(tmp_path / "b", overscan=4, **kwargs)
    assert _files_sha256(a.directory) == _files_sha256(b.directory)
    for name, info in a.truth["lights"].items():
        assert info["rotation"] == b.truth["lights"][name]["rotation"]
    c = write_sample_night(tmp_path / "c", overscan=4, **dict(kwargs, seed=12))
    assert _files_sha256(c.directory) != _files_sha256(a.directory)
    # A second target leaves the first target's files as in a single-target night.
    single = write_sample_night(tmp_path / "single", overscan=4,
                                **dict(kwargs, objects=None, object_name="M67",
                                       light_exptime=90.0))
    assert [p.name for p in single.light["V"]] == [p.name for p in
                                                  a.light_by_object["M67"]["V"]]
    for pa, ps in zip(a.light_by_object["M67"]["R"] + a.dark, single.light["R"] + single.dark,
                      strict=True):
        assert pa.read_bytes() == ps.read_bytes()


def test_truth_image_matches_a_calibrated_light(rich: SampleNight) -> None:
    t = rich.truth
    ny, nx = RICH["shape"]
    path = rich.light_by_object["NGC 2548"]["R"][2]
    info = t["lights"][path.name]
    model = truth_image(rich, "NGC 2548", "R", info["wcs"], (ny, nx), frames=[path.name])
    data = fits.getdata(path)[:, :nx].astype(np.float64)
    data -= t["bias_level"] + t["bias_columns"][None, :]
    data -= t["dark_current"] * info["exptime"] / t["gain"]
    data /= t["flat"]["R"]
    good = np.ones((ny, nx), dtype=bool)
    good[tuple(t["cosmic_rays"][path.name].T)] = False
    good[tuple(t["hot_pixels"].T)] = False
    good &= model < 20000  # far from saturation
    sigma = np.sqrt(model / t["gain"] + t["read_noise"] ** 2) / t["flat"]["R"]
    chi = ((data - model) / sigma)[good]
    assert abs(chi.mean()) < 0.05
    assert chi.std() == pytest.approx(1.0, abs=0.05)
    # The truth image averages frames: here, all of the target's R lights.
    mean = truth_image(rich, "NGC 2548", "R", info["wcs"], (ny, nx))
    assert np.median(mean) == pytest.approx(np.median(model), rel=0.05)
    with pytest.raises(ValueError, match="pixel scale"):
        w = info["wcs"].deepcopy()
        w.wcs.cdelt = w.wcs.cdelt * 2
        truth_image(rich, "NGC 2548", "R", w, (ny, nx))


@pytest.mark.parametrize("kwargs,match", [
    (dict(objects=("M 67", "M_67")), "distinct target"),
    (dict(objects=("M67", "X"), light_exptime={"M67": 60.0}), "no exposure time"),
    (dict(dark_exptimes=(30.0, 30.0)), "duplicate dark"),
    (dict(dark_exptimes=(0.0,)), "exposure times"),
    (dict(overscan=-1), "overscan"),
    (dict(rotation_deg=-1.0), "rotation_deg"),
])
def test_new_options_are_checked(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_sample_night(tmp_path, shape=(32, 32), **kwargs)
