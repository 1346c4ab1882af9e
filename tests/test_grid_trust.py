"""The grid, the WCS and which frames count (issue 14): a product never claims sky coordinates it
does not have; frames whose WCS cannot place them are refused (``stack``) or skipped with their
reason (``night``, or a grid fixed by ``--reference``/``--grid-header``), and only the frames
that contribute are counted; a union grid stretched by one wrong CRVAL is refused at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import skystack
from skystack.cli import main
from skystack.errors import SkystackError
from skystack.register import measure_stars
from skystack.regrid.grid import optimal_grid
from tests.fake_device import FakeDevice, FakeGpuBackend
from tests.test_register_align import _true_wcs
from tests.test_register_synth import TrueMap, catalogue, render_frame

SMALL = (64, 80)
CELESTIAL_KEYS = ("RADESYS", "EQUINOX", "LONPOLE", "LATPOLE", "RA", "DEC")


def _header(ra: float, dec: float, *, exptime: float = 10.0, date: str = "2026-03-14T21:00:00",
            scale_arcsec: float = 1.0, shape=SMALL) -> fits.Header:
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CRPIX1"], h["CRPIX2"] = (shape[1] + 1) / 2, (shape[0] + 1) / 2
    h["CD1_1"], h["CD1_2"] = -scale_arcsec / 3600, 0.0
    h["CD2_1"], h["CD2_2"] = 0.0, scale_arcsec / 3600
    h["EXPTIME"] = exptime
    h["DATE-OBS"] = date
    return h


def _write(path, header, value: float = 100.0, shape=SMALL) -> str:
    rng = np.random.default_rng(abs(hash(os.path.basename(str(path)))) % 2**32)
    data = (value + rng.normal(0, 1, shape)).astype(np.float32)
    fits.PrimaryHDU(data, header=header).writeto(path)
    return str(path)


@pytest.fixture(scope="module")
def wcs_frames(tmp_path_factory):
    """Three overlapping frames near (150, 30) at 100 ADU, and bad ones: a singular CD, an
    unparsable CRVAL1, CRVALs 50, 75 and 180 deg off, and one 300" off (real, but off a grid
    made from the first frame); the bad ones have another level, EXPTIME and an earlier date,
    so that counting them shows in the product."""
    d = tmp_path_factory.mktemp("trust")
    good = [_write(d / f"good{k}.fits", _header(150 + 4e-4 * k, 30 + 3e-4 * k))
            for k in range(3)]
    early = dict(exptime=500.0, date="2026-03-14T19:00:00")
    singular = _header(150, 30, **early)
    singular["CD1_1"] = singular["CD2_2"] = 0.0
    unparsable = _header(150, 30, **early)
    unparsable["CRVAL1"] = "abc"
    out = {"dir": d, "good": good,
           "singular": _write(d / "singular.fits", singular, 5000.0),
           "unparsable": _write(d / "unparsable.fits", unparsable, 5000.0),
           "off_grid": _write(d / "off_grid.fits", _header(150.1, 30, **early), 5000.0)}
    for name, (ra, dec) in {"far50": (150, 80), "far75": (240, 30),
                            "far180": (330, -30)}.items():
        out[name] = _write(d / f"{name}.fits", _header(ra, dec, **early), 5000.0)
    return out


# -- 1. no fake sky coordinates -----------------------------------------------------------------

STAR_SHAPE = (160, 192)
STAR_MAPS = [dict(), dict(dx=5.3, dy=-3.6, theta_deg=1.1), dict(dx=-7.8, dy=6.1, theta_deg=-1.7)]


@pytest.fixture(scope="module")
def star_frames(tmp_path_factory):
    """Three frames of one star field with known maps (TrueMap), written without any WCS, and
    with their true WCS (``_true_wcs``); frame 1 is the sharpest (the automatic reference)."""
    d = tmp_path_factory.mktemp("stars")
    rng = np.random.default_rng(77)
    cat = catalogue(120, STAR_SHAPE, rng, margin=30)
    out = {"plain": [], "wcs": [], "truth": [], "cat": cat}
    for k, kw in enumerate(STAR_MAPS):
        truth = TrueMap(STAR_SHAPE, **kw)
        img = render_frame(truth, cat, rng, fwhm=2.6 if k == 1 else 3.2)
        fits.PrimaryHDU(img, header=fits.Header({"EXPTIME": 60.0})).writeto(d / f"p{k}.fits")
        hdr = _true_wcs(truth).to_header()
        hdr["EXPTIME"] = 60.0
        fits.PrimaryHDU(img, header=hdr).writeto(d / f"w{k}.fits")
        out["plain"].append(str(d / f"p{k}.fits"))
        out["wcs"].append(str(d / f"w{k}.fits"))
        out["truth"].append(truth)
    out["dir"] = d
    return out


def _assert_no_sky(header: fits.Header, wcs: WCS) -> None:
    assert not wcs.has_celestial
    assert not WCS(header).has_celestial
    assert header["CTYPE1"] == header["CTYPE2"] == "PIXEL"
    assert not [k for k in CELESTIAL_KEYS if k in header]


def test_star_aligned_stack_on_a_reference_without_wcs_has_a_pixel_wcs(star_frames):
    ccd = skystack.stack(star_frames["plain"], reference=star_frames["plain"][0], align="stars",
                         backend="cpu")
    _assert_no_sky(ccd.meta, ccd.wcs)
    assert ccd.meta["ALIGN"] == "stars" and ccd.meta["REGREF"] == "p0.fits"
    assert ccd.meta["REGMODEL"] == "similarity"
    # The product is the reference's pixel grid: its WCS gives the reference's FITS pixels.
    x, y = np.meshgrid(np.arange(0, STAR_SHAPE[1], 37.0), np.arange(0, STAR_SHAPE[0], 29.0))
    wx, wy = ccd.wcs.pixel_to_world_values(x, y)
    np.testing.assert_allclose(wx, x + 1, atol=1e-9)
    np.testing.assert_allclose(wy, y + 1, atol=1e-9)


def test_star_aligned_union_grid_pixel_wcs_gives_the_reference_pixels(star_frames):
    """Without --reference the grid is the union (reference chosen automatically): the product's
    pixel WCS must still give the true reference-frame position of every star."""
    ccd = skystack.stack(star_frames["plain"], align="stars", backend="cpu", method="median")
    _assert_no_sky(ccd.meta, ccd.wcs)
    ref = ccd.registration.reference_index
    assert ref == 1
    assert ccd.data.shape != STAR_SHAPE  # the union of the dithered frames
    image = np.where(np.isfinite(ccd.data), ccd.data, np.nanmedian(ccd.data))
    stars = measure_stars(image)
    bright = np.argsort(stars.flux)[::-1][:30]
    wx, wy = ccd.wcs.pixel_to_world_values(stars.x[bright], stars.y[bright])
    # Ground truth: the catalogue seen through the reference frame's map.
    tx, ty = star_frames["truth"][ref].forward(*star_frames["cat"][:2])
    dist = np.min(np.hypot((wx - 1)[:, None] - tx[None], (wy - 1)[:, None] - ty[None]), axis=1)
    # (a few bright stars are blended with neighbours: their centroids are off by ~0.5 px)
    assert np.median(dist) < 0.05 and np.mean(dist < 0.15) > 0.8


def test_cli_star_aligned_product_has_no_sky_coordinates(star_frames, tmp_path):
    out = tmp_path / "s.fits"
    assert main(["stack", *star_frames["plain"], "-o", str(out), "--align", "stars", "-q",
                 "--backend", "cpu"]) == 0
    header = fits.getheader(out)
    _assert_no_sky(header, WCS(header))
    # --grid-header (a sky grid) cannot be combined with frames that have no sky position.
    grid = tmp_path / "grid.hdr"
    h = _header(150, 30)
    h["NAXIS1"], h["NAXIS2"] = 50, 40
    h.totextfile(grid)
    code = main(["stack", *star_frames["plain"], "-o", str(tmp_path / "g.fits"), "--align",
                 "stars", "--grid-header", str(grid), "-q"])
    assert code == 2


def test_star_alignment_on_a_reference_with_wcs_keeps_its_sky_coordinates(star_frames):
    ccd = skystack.stack(star_frames["wcs"], reference=star_frames["wcs"][0], align="stars",
                         backend="cpu")
    assert ccd.wcs.has_celestial and ccd.meta["CTYPE1"] == "RA---TAN"
    true = WCS(fits.getheader(star_frames["wcs"][0]))
    x, y = np.array([0.0, 100.0, 191.0]), np.array([0.0, 80.0, 159.0])
    np.testing.assert_allclose(np.array(ccd.wcs.pixel_to_world_values(x, y)),
                               np.array(true.pixel_to_world_values(x, y)), atol=1e-10)


def test_star_aligned_stack_on_the_gpu_path_has_the_same_pixel_wcs(star_frames):
    ref = star_frames["plain"][0]
    gpu = skystack.stack(star_frames["plain"], reference=ref, align="stars",
                         backend=FakeGpuBackend(FakeDevice()), method="mean")
    cpu = skystack.stack(star_frames["plain"], reference=ref, align="stars", backend="cpu",
                         method="mean")
    _assert_no_sky(gpu.meta, gpu.wcs)
    assert gpu.wcs.to_header() == cpu.wcs.to_header()
    np.testing.assert_allclose(gpu.data, cpu.data, rtol=1e-6, equal_nan=True)


# -- 2. frames that cannot be placed, and frames that contribute nothing ----------------------

@pytest.mark.parametrize("bad, message", [
    ("singular", "singular.fits: invalid WCS: the CD matrix is singular"),
    ("unparsable", "unparsable.fits: invalid WCS: CRVAL1 = 'abc' is not a number"),
])
def test_stack_refuses_a_frame_whose_wcs_cannot_place_it(wcs_frames, tmp_path, capsys, bad,
                                                         message):
    with pytest.raises(SkystackError, match=message):
        skystack.stack(wcs_frames["good"] + [wcs_frames[bad]], backend="cpu")
    # Also with a grid given: the rule is the same whatever the grid.
    with pytest.raises(SkystackError, match=message):
        skystack.stack(wcs_frames["good"] + [wcs_frames[bad]], reference=wcs_frames["good"][0])
    out = tmp_path / "o.fits"
    assert main(["stack", *wcs_frames["good"], wcs_frames[bad], "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("backend", ["cpu", "fake-gpu"])
@pytest.mark.parametrize("grid_from", ["reference", "grid_header"])
def test_frames_off_a_given_grid_are_skipped_and_not_counted(wcs_frames, tmp_path, caplog,
                                                             backend, grid_from):
    good = wcs_frames["good"]
    inputs = [good[0], wcs_frames["off_grid"], *good[1:], wcs_frames["far50"]]
    grid_header = _header(150, 30)
    grid_header["NAXIS1"], grid_header["NAXIS2"] = SMALL[1], SMALL[0]
    grid = {"reference": good[0]} if grid_from == "reference" else {"grid_header": grid_header}
    engine = FakeGpuBackend(FakeDevice()) if backend == "fake-gpu" else "cpu"
    ccd = skystack.stack(inputs, backend=engine, method="mean", **grid)
    h = ccd.meta
    assert h["NCOMBINE"] == 3 and h["NSKIPPED"] == 2
    assert [h[f"IMCMB{i:03d}"] for i in (1, 2, 3)] == ["good0.fits", "good1.fits", "good2.fits"]
    assert "IMCMB004" not in h
    assert h["EXPTIME"] == 10.0 and h["DATE-OBS"].startswith("2026-03-14T21:00:00")
    history = "\n".join(h["HISTORY"])
    assert "skipped off_grid.fits: its footprint does not overlap the output grid" in history
    assert "skipped far50.fits" in history
    assert "off_grid.fits: skipped (its footprint does not overlap" in caplog.text
    assert ccd.coverage.max() == 3 and abs(np.nanmedian(ccd.data) - 100) < 1
    # Streamed to a file: the same frames counted.
    out = skystack.api_reproject.stack_to_file(inputs, tmp_path / "s.fits", backend=engine,
                                               method="mean", **grid)
    assert fits.getheader(out)["NCOMBINE"] == 3


def test_no_frame_on_the_given_grid_is_a_one_line_error(wcs_frames, tmp_path, capsys):
    out = tmp_path / "o.fits"
    code = main(["stack", wcs_frames["off_grid"], wcs_frames["far50"], "--reference",
                 wcs_frames["good"][0], "-o", str(out), "-q"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "no frame overlaps the output grid: off_grid.fits, far50.fits" in err
    assert "\n" not in err


# -- 3. runaway union grid ----------------------------------------------------------------------

@pytest.mark.parametrize("far", ["far50", "far75", "far180"])
def test_union_grid_refuses_a_frame_far_from_the_others(wcs_frames, far):
    with pytest.raises(SkystackError) as err:
        skystack.stack(wcs_frames["good"] + [wcs_frames[far]], backend="cpu")
    text = str(err.value)
    assert f"{far}.fits is" in text and "deg from the median position of the others" in text
    assert "--crop intersection" in text and "--grid-header" in text and "\n" not in text
    # The outlier is named wherever it is in the list.
    with pytest.raises(SkystackError, match=f"{far}.fits is"):
        skystack.stack([wcs_frames[far]] + wcs_frames["good"], backend="cpu")


def test_optimal_grid_size_rule():
    def w(ra, dec):
        header = _header(ra, dec)
        del header["DATE-OBS"]
        return WCS(header)

    # A 2 x 2 mosaic with no overlap is a grid as large as the frames: accepted.
    dx, dy = SMALL[1] / 3600, SMALL[0] / 3600
    tiles = [(w(150 + i * dx / np.cos(np.radians(30)), 30 + j * dy), SMALL)
             for i in (0, 1) for j in (0, 1)]
    _, shape = optimal_grid(tiles)
    assert abs(shape[0] - 2 * SMALL[0]) <= 2 and abs(shape[1] - 2 * SMALL[1]) <= 2
    # One frame a degree away: the grid would be ~60 times the frames' area.
    far = [(w(151, 30), SMALL)]
    with pytest.raises(SkystackError, match=r"the union grid would be \d+ x \d+ px, .* times "
                                            r"the frames' total area; frame 2 is "):
        optimal_grid(tiles[:2] + far)
    with pytest.raises(SkystackError, match="; c is 0.8"):
        optimal_grid(tiles[:2] + far, labels=["a", "b", "c"])
    # Two frames: neither is the outlier.
    with pytest.raises(SkystackError, match="a and c are 0.866 deg apart"):
        optimal_grid([tiles[0], (w(151, 30), SMALL)], labels=["a", "c"])


def test_cli_runaway_grid_is_refused_quickly_with_bounded_memory(wcs_frames, tmp_path):
    """One wrong CRVAL stretched the union grid across the sky (24 GB RSS before): now a
    one-line error, exit code 2, in seconds and without the memory of a grid."""
    out = tmp_path / "o.fits"
    probe = ("import atexit, resource, runpy, sys; atexit.register(lambda: print('MAXRSS', "
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)); "
             "runpy.run_module('skystack', run_name='__main__')")
    src = os.path.dirname(os.path.dirname(os.path.abspath(skystack.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", probe, "stack", *wcs_frames["good"],
                          wcs_frames["far75"], "-o", str(out), "-q"],
                         capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - t0
    assert run.returncode == 2, run.stderr[-2000:]
    err = run.stderr.strip()
    assert "\n" not in err and "far75.fits is 75.5 deg from the median" in err
    maxrss_mb = int(run.stdout.split("MAXRSS")[1]) / 1024
    assert maxrss_mb < 1024 and seconds < 60
    assert not out.exists() and os.listdir(tmp_path) == []


# -- night -------------------------------------------------------------------------------------

def test_night_skips_lights_that_cannot_be_placed_with_their_reason(tmp_path):
    from skystack.demo_data import write_sample_night
    from skystack.night.run import run_night

    sample = write_sample_night(tmp_path / "raw", shape=(96, 112), n_bias=3, n_dark=2,
                                dark_exptime=60.0, n_flat=2, filters=("V",), n_light=5,
                                light_exptime=60.0, dither_px=4.0, rotation_deg=1.0, seed=5)
    lights = sorted(sample.light_by_object["M67"]["V"], key=lambda p: p.name)
    edits = {lights[1]: {"CRVAL1": "abc"},
             lights[2]: {"PC1_1": 0.0, "PC1_2": 0.0, "PC2_1": 0.0, "PC2_2": 0.0},
             lights[3]: {"CRVAL2": 12.3}}  # a wrong pointing: off the first light's grid
    for path, edit in edits.items():
        with fits.open(path, mode="update") as hdul:
            hdul[0].header.update(edit)
    result = run_night(tmp_path / "raw", tmp_path / "out", backend="cpu", previews=False,
                       align="wcs")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    by_name = {os.path.basename(f["file"]): f for f in summary["frames"]}
    assert [by_name[p.name]["used"] for p in lights] == [True, False, False, False, True]
    assert "CRVAL1 = 'abc' is not a number" in by_name[lights[1].name]["reason"]
    assert "singular" in by_name[lights[2].name]["reason"]
    assert "does not overlap" in by_name[lights[3].name]["reason"]
    stack = [p for p in result.products if p.kind == "stack"][0]
    header = fits.getheader(stack.path)
    assert header["NCOMBINE"] == 2
    assert {header["IMCMB001"], header["IMCMB002"]} == {lights[0].name, lights[4].name}


def test_night_grid_is_not_taken_from_a_light_with_a_wrong_pointing(tmp_path):
    """The first light of the night has a wrong CRVAL (a parsable number, 3 degrees off): the
    object's grid is the next light whose pointing agrees with the others, so only the wrong
    light is skipped (it would otherwise have been the grid, and every other light skipped)."""
    from skystack.demo_data import write_sample_night
    from skystack.night.run import run_night

    sample = write_sample_night(tmp_path / "raw", shape=(96, 112), n_bias=3, n_dark=2,
                                dark_exptime=60.0, n_flat=2, filters=("V",), n_light=5,
                                light_exptime=60.0, dither_px=4.0, rotation_deg=1.0, seed=5)
    lights = sorted(sample.light_by_object["M67"]["V"],
                    key=lambda p: (fits.getheader(p)["DATE-OBS"], p.name))
    with fits.open(lights[0], mode="update") as hdul:
        hdul[0].header["CRVAL2"] = hdul[0].header["CRVAL2"] + 3.0
    result = run_night(tmp_path / "raw", tmp_path / "out", backend="cpu", previews=False,
                       align="wcs")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    by_name = {os.path.basename(f["file"]): f for f in summary["frames"]}
    assert [by_name[p.name]["used"] for p in lights] == [False, True, True, True, True]
    assert "does not overlap" in by_name[lights[0].name]["reason"]
    header = fits.getheader([p for p in result.products if p.kind == "stack"][0].path)
    assert header["NCOMBINE"] == 4 and header["GRIDREF"] == lights[1].name
