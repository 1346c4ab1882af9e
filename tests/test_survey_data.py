"""The generated survey night (skystack.survey_data) against its own truth, checked with
independent means: astropy's FITS and WCS readers, a gnomonic projection written out here, and
the photon statistics of the raw pixels (mean, variance) computed with numpy."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skystack.survey_data import SurveyNight, survey_truth_image, write_survey_night

SEED = 3


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> SurveyNight:
    return write_survey_night(tmp_path_factory.mktemp("survey"), seed=SEED)


def _section(text: str) -> tuple[slice, slice]:
    """IRAF [x1:x2,y1:y2] as numpy (y, x) slices."""
    x1, x2, y1, y2 = map(int, re.fullmatch(r"\[(\d+):(\d+),(\d+):(\d+)\]", text).groups())
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def _data(path, extname: str) -> np.ndarray:
    with fits.open(path) as hdul:
        hdu = hdul[extname]
        return hdu.data[_section(hdu.header["DATASEC"])].astype(np.float64)


def test_files_extensions_and_keywords(night):
    truth = night.truth
    roles = {"bias": "zero", "dark": "dark", "flat": "dome flat", "light": "object"}
    assert len(night.exposures) == 5 + 2 * 3 + 2 * 3 + 2 * 9
    for path in night.exposures:
        exp = truth.exposures[path.name]
        with fits.open(path) as hdul:
            prim = hdul[0].header
            assert hdul[0].data is None
            assert prim["IMAGETYP"] == roles[exp.role]
            assert prim["EXPTIME"] == exp.exptime
            assert prim["DATE-OBS"].startswith("2026-04-2")
            assert prim["TELESCOP"] and prim["INSTRUME"]
            assert prim.get("FILTER", "") == exp.filter
            assert [h.name for h in hdul[1:]] == [f"CCD{k}" for k in range(1, 7)]
            for hdu, ccd in zip(hdul[1:], truth.ccds, strict=True):
                h = hdu.header
                assert isinstance(hdu, fits.CompImageHDU) == exp.compressed
                assert hdu.data.dtype == np.uint16
                assert hdu.data.shape == (96, 128 + 16)
                assert (h["CCDNAME"], h["CCDNUM"], h["CCDSUM"]) == (ccd.ccdname, ccd.number,
                                                                    "1 1")
                assert (h["DETSEC"], h["DATASEC"], h["TRIMSEC"], h["BIASSEC"]) == (
                    ccd.detsec, ccd.datasec, ccd.datasec, ccd.biassec)
                assert h["GAIN"] == pytest.approx(ccd.gain, rel=1e-5)
                assert h["RDNOISE"] == pytest.approx(ccd.read_noise * ccd.gain, rel=1e-5)
                assert WCS(h).has_celestial == (exp.role == "light")
                # Data and overscan sections tile the raw rows; DETSEC is the data's size.
                ys, xs = _section(h["DATASEC"])
                _, bx = _section(h["BIASSEC"])
                assert xs.stop - xs.start + bx.stop - bx.start == hdu.data.shape[1]
                dy, dx = _section(h["DETSEC"])
                assert (dy.stop - dy.start, dx.stop - dx.start) == (96, 128)
                assert (dx.start, dy.start) == ccd.origin
        if exp.role == "light":
            assert exp.compressed == path.name.endswith(".fits.fz")
    # Per-CCD electronics differ, and both overscan sides occur.
    assert len({round(c.gain, 3) for c in truth.ccds}) == 6
    assert len({round(c.bias_level) for c in truth.ccds}) == 6
    assert {c.data_x0 for c in truth.ccds} == {0, 16}
    assert [c.number for c in truth.ccds if c.amp_glow is not None] == [1, 5]
    assert [c.number for c in truth.ccds if c.sip] == [3, 4]
    # CCDs do not overlap: gaps of 12 px between neighbours.
    assert truth.ccds[1].origin[0] - truth.ccds[0].origin[0] == 128 + 12
    assert truth.ccds[3].origin[1] - truth.ccds[0].origin[1] == 96 + 12


def test_every_ccd_wcs_puts_stars_where_they_were_painted(night):
    """The header WCS of every CCD (read by astropy) maps each star's true RA/Dec to the pixel
    it was painted at, and so does a gnomonic projection about the pointing written out here
    (plus the camera's radial distortion on the SIP CCDs): the WCS follows the focal plane."""
    truth = night.truth
    height, width = truth.focal_plane
    axis_x, axis_y = (width - 1) / 2, (height - 1) / 2
    scale = truth.pixel_scale / 3600.0
    checked = 0
    for paths in night.light.values():
        for path in paths:
            exp = truth.exposures[path.name]
            with fits.open(path) as hdul:
                tel_ra, tel_dec = np.radians([hdul[0].header["TELRA"], hdul[0].header["TELDEC"]])
                for ccd in truth.ccds:
                    h = hdul[ccd.extname].header
                    painted = exp.star_pixels[ccd.extname]
                    assert painted.size > 10
                    ra = truth.stars["ra"][painted["index"]]
                    dec = truth.stars["dec"][painted["index"]]
                    px, py = WCS(h).all_world2pix(ra, dec, 0, tolerance=1e-8)
                    assert np.allclose(px - ccd.data_x0, painted["x"], atol=1e-4)
                    assert np.allclose(py, painted["y"], atol=1e-4)
                    # Gnomonic projection: standard coordinates (xi east, eta north), degrees.
                    a, d = np.radians(ra), np.radians(dec)
                    cosc = (np.sin(tel_dec) * np.sin(d)
                            + np.cos(tel_dec) * np.cos(d) * np.cos(a - tel_ra))
                    xi = np.degrees(np.cos(d) * np.sin(a - tel_ra) / cosc)
                    eta = np.degrees((np.cos(tel_dec) * np.sin(d)
                                      - np.sin(tel_dec) * np.cos(d) * np.cos(a - tel_ra)) / cosc)
                    # Offsets from the optical axis of the painted pixels, in the focal plane.
                    u = painted["x"] + ccd.origin[0] - axis_x
                    v = painted["y"] + ccd.origin[1] - axis_y
                    if ccd.sip:
                        r2 = u * u + v * v
                        u, v = u * (1 + truth.sip_k * r2), v * (1 + truth.sip_k * r2)
                    assert np.allclose(-u * scale, xi, atol=1e-4 * scale)
                    assert np.allclose(v * scale, eta, atol=1e-4 * scale)
                    checked += 1
    assert checked == 18 * 6


def test_bright_stars_sit_at_their_painted_pixels(night):
    """The pixels agree with the truth: the centroid of the brightest isolated star on each
    CCD (overscan on either side, SIP or not) is where the truth says it was painted."""
    truth = night.truth
    path = night.light_by_pointing["r"][0][0]
    exp = truth.exposures[path.name]
    checked = 0
    for ccd in truth.ccds:
        data = _data(path, ccd.extname) - ccd.bias_map
        painted = exp.star_pixels[ccd.extname]
        flux = truth.star_flux["r"][painted["index"]]
        inside = (painted["x"] > 10) & (painted["x"] < 117) & (painted["y"] > 10) \
            & (painted["y"] < 85) & (flux > 1000)
        # The brightest star with no other within 20 pixels but faint ones (a clean centroid).
        for k in np.flatnonzero(inside)[np.argsort(-flux[inside])]:
            x, y = painted["x"][k], painted["y"][k]
            near = np.hypot(painted["x"] - x, painted["y"] - y) < 20
            if np.sum(near & (flux > 0.02 * flux[k])) == 1:
                break
        else:
            continue
        iy, ix = round(y), round(x)
        box = data[iy - 6:iy + 7, ix - 6:ix + 7]
        box = box - np.median(data)
        yy, xx = np.mgrid[iy - 6:iy + 7, ix - 6:ix + 7]
        checked += 1
        assert (box * xx).sum() / box.sum() == pytest.approx(x, abs=0.15)
        assert (box * yy).sum() / box.sum() == pytest.approx(y, abs=0.15)
    assert checked >= 4


def test_raw_biases_per_ccd_have_the_true_level_and_read_noise(night):
    truth = night.truth
    for ccd in truth.ccds:
        frames = []
        for path in night.bias:
            with fits.open(path) as hdul:
                hdu = hdul[ccd.extname]
                raw = hdu.data.astype(np.float64)
                over = raw[_section(hdu.header["BIASSEC"])]
                frames.append(raw[_section(hdu.header["DATASEC"])])
                # The overscan holds the bias level and read noise only.
                assert over.mean() == pytest.approx(ccd.bias_level, abs=5 * ccd.read_noise
                                                    / over.size**0.5)
                assert over.std() == pytest.approx(ccd.read_noise, rel=0.1)
        stack = np.array(frames)
        residual = stack - ccd.bias_map
        n = residual.size
        assert residual.mean() == pytest.approx(0.0, abs=5 * ccd.read_noise / n**0.5)
        # Read noise (+ the 1/12 ADU^2 of quantisation) within its sampling error.
        assert residual.std() == pytest.approx((ccd.read_noise**2 + 1 / 12) ** 0.5, rel=0.03)
        # The column pattern is in the data: the mean bias follows bias_columns.
        cols = stack.mean(axis=(0, 1)) - ccd.bias_level
        assert np.corrcoef(cols, ccd.bias_columns)[0, 1] > 0.8


def test_flats_follow_the_response_and_a_flat_pair_gives_the_gain(night):
    truth = night.truth
    for f, paths in night.flat.items():
        for ccd in truth.ccds:
            exps = [truth.exposures[p.name] for p in paths]
            signal = [(_data(p, ccd.extname) - ccd.bias_map) * ccd.gain
                      - ccd.dark_current * e.exptime for p, e in zip(paths, exps, strict=True)]
            # Each flat is the lamp times the absolute response, in electrons.
            for s, e in zip(signal, exps, strict=True):
                ratio = np.median(s / ccd.response[f]) / e.flat_level
                assert ratio == pytest.approx(1.0, abs=0.005)
            # The normalised flat has the truth's pattern (noise 1/sqrt(3 * 30000) ~ 0.3 %).
            mean_flat = np.mean([s / np.median(s) for s in signal], axis=0)
            assert np.std(mean_flat - ccd.flat[f]) < 0.006
            # Gain from a flat pair (photon transfer), the read noise from the overscan.
            with fits.open(paths[0]) as h1, fits.open(paths[1]) as h2:
                f1, f2 = (h[ccd.extname].data.astype(np.float64) for h in (h1, h2))
                rn = np.mean([f[_section(ccd.biassec)].std() for f in (f1, f2)])
                d1 = f1[_section(ccd.datasec)] - np.median(f1[_section(ccd.biassec)])
                d2 = f2[_section(ccd.datasec)] - np.median(f2[_section(ccd.biassec)])
            r = d1.mean() / d2.mean()
            variance = np.var(d1 - r * d2)
            gain = d1.mean() * (1 + r) / (variance - rn**2 * (1 + r**2))
            assert gain == pytest.approx(ccd.gain, rel=0.05)


def test_darks_show_the_dark_current_glow_and_hot_pixels(night):
    truth = night.truth
    t = 60.0
    for ccd in truth.ccds:
        dark = np.mean([_data(p, ccd.extname) for p in night.dark[t]], axis=0)
        rate = (dark - ccd.bias_map) * ccd.gain / t
        noise = np.sqrt(ccd.dark_current * t + (ccd.read_noise * ccd.gain) ** 2) / t / 3**0.5
        z = (rate - ccd.dark_current) / noise
        assert abs(z.mean()) < 0.1 and 0.85 < z.std() < 1.15
        hy, hx = ccd.hot_pixels.T
        assert np.all(ccd.dark_current[hy, hx] >= 10 * 0.1 * 0.99)
        if ccd.amp_glow is not None:
            corner = (ccd.shape[0] - 1, 0 if ccd.data_x0 else ccd.shape[1] - 1)
            assert rate[corner] > 2.0  # 4 e-/s of glow against 0.1 e-/s of dark current


def test_pointings_fill_the_gaps_and_overlap(night):
    """Every point of the central pointing's focal-plane footprint (CCD gaps included) lies on
    a CCD of some light in each filter, and most of it on several (the fields overlap)."""
    truth = night.truth
    height, width = truth.focal_plane
    ra0, dec0 = truth.pointings[4]
    grid = WCS(naxis=2)
    grid.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    grid.wcs.crval = [ra0, dec0]
    grid.wcs.crpix = [(width + 1) / 2, (height + 1) / 2]
    grid.wcs.cdelt = [-truth.pixel_scale / 3600, truth.pixel_scale / 3600]
    yy, xx = np.mgrid[0:height:2, 0:width:2]
    ra, dec = grid.all_pix2world(xx.ravel(), yy.ravel(), 0)
    for f, paths in night.light.items():
        count = np.zeros(ra.size, int)
        central = np.zeros(ra.size, int)
        for path in paths:
            exp = truth.exposures[path.name]
            for ccd in truth.ccds:
                px, py = exp.wcs[ccd.extname].all_world2pix(ra, dec, 0)
                px = px - ccd.data_x0
                on = (px >= -0.5) & (px < ccd.shape[1] - 0.5) & (py >= -0.5) \
                    & (py < ccd.shape[0] - 0.5)
                count += on
                if exp.pointing == 4:
                    central += on
        assert 0.8 < central.mean() < 1.0  # the central pointing alone leaves gaps
        assert count.min() >= 1, f
        assert np.mean(count >= 2) > 0.9


def test_fz_lights_hold_the_intended_integers(night, tmp_path):
    """The tile-compressed lights decompress (astropy) to exactly the integers that the same
    night written without compression holds."""
    plain = write_survey_night(tmp_path, seed=SEED, n_bias=0, n_dark=0, n_flat=0,
                               filters=("g",), fz_pointings=())
    compressed = [p for p in night.light["g"] if p.name.endswith(".fits.fz")]
    assert len(compressed) == 4
    by_pointing = {night.truth.exposures[p.name].pointing: p for p in compressed}
    for pointing, path in by_pointing.items():
        twin = plain.light_by_pointing["g"][pointing][0]
        assert twin.name == path.name[:-3]
        with fits.open(path) as a, fits.open(twin) as b:
            for ccd in night.truth.ccds:
                hdu = a[ccd.extname]
                assert isinstance(hdu, fits.CompImageHDU)
                assert hdu.data.dtype == b[ccd.extname].data.dtype == np.uint16
                assert np.array_equal(hdu.data, b[ccd.extname].data)
                assert hdu.header["CRPIX1"] == b[ccd.extname].header["CRPIX1"]
        # On disk: fpack's layout, one RICE_1 tile-compressed binary table per CCD.
        with fits.open(path, disable_image_compression=True) as raw:
            assert [(h.name, h.header["ZIMAGE"], h.header["ZCMPTYPE"]) for h in raw[1:]] == [
                (c.extname, True, "RICE_1") for c in night.truth.ccds]


def _digest(directory) -> str:
    h = hashlib.sha256()
    for p in sorted(directory.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_files(tmp_path):
    small = dict(n_bias=1, n_dark=1, dark_exptimes=(60.0,), n_flat=1, filters=("r",),
                 grid=(1, 2), fz_pointings=(1,), satellite=("r", 0))
    write_survey_night(tmp_path / "a", seed=7, **small)
    write_survey_night(tmp_path / "b", seed=7, **small)
    write_survey_night(tmp_path / "c", seed=8, **small)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_truth_image_is_what_the_calibrated_pixels_hold(night):
    """survey_truth_image on a CCD's own grid equals that CCD's raw pixels calibrated with the
    truth (bias, dark, gain, response), within the photon and read noise: the stars' fluxes,
    positions and the sky level are what the truth says, on every CCD."""
    truth = night.truth
    path = night.light_by_pointing["g"][2][0]
    exp = truth.exposures[path.name]
    t = exp.exptime
    for ccd in truth.ccds:
        w = exp.wcs[ccd.extname].deepcopy()
        w.wcs.crpix = [w.wcs.crpix[0] - ccd.data_x0, w.wcs.crpix[1]]
        if w.sip is not None:
            w.sip = type(w.sip)(w.sip.a, w.sip.b, None, None, w.wcs.crpix)
        model = survey_truth_image(night, "g", w, ccd.shape, exposures=[path.name])
        electrons = (_data(path, ccd.extname) - ccd.bias_map) * ccd.gain \
            - ccd.dark_current * t
        rate = electrons / (ccd.response["g"] * t)
        lam = ccd.response["g"] * model * t + ccd.dark_current * t
        sigma = np.sqrt(lam + (ccd.read_noise * ccd.gain) ** 2) / (ccd.response["g"] * t)
        z = (rate - model) / sigma
        good = np.ones(ccd.shape, bool)
        cy, cx = exp.cosmic_rays[ccd.extname].T
        good[cy, cx] = False
        assert abs(z[good].mean()) < 0.05
        assert 0.9 < z[good].std() < 1.1
        # Without its stars the model would not fit: they are there, at the right flux.
        z_sky = (rate - truth.sky["g"] * exp.sky_scale) / sigma
        assert np.sum(z_sky[good] ** 2) > np.sum(z[good] ** 2) + 200


def test_satellite_trail_crosses_one_light(night):
    truth = night.truth
    name = truth.satellite_exposure
    exp = truth.exposures[name]
    assert exp.filter == "g" and exp.pointing == 4
    assert len(exp.satellite) >= 2  # it crosses CCDs
    assert all(not e.satellite for n, e in truth.exposures.items() if n != name)
    for extname, mask in exp.satellite.items():
        ccd = truth.ccd(extname)
        rate = (_data(exp.path, extname) - ccd.bias_map) * ccd.gain
        core = mask & (rate > 0)
        assert np.median(rate[mask]) > np.median(rate[~mask]) + 50
        assert core.sum() > 50
