"""Reprojected stacking and single-frame reprojection against reproject and astropy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import sigma_clip
from astropy.wcs import WCS
from reproject import reproject_interp

import skystack
from skystack.cli import main


def _wcs(shape, ra, dec, rot_deg, scale_arcsec=1.0, sip=False) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    s = scale_arcsec / 3600
    t = np.radians(rot_deg)
    w.wcs.cd = [[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]]
    w.pixel_shape = (shape[1], shape[0])
    if sip:
        from astropy.wcs import Sip

        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[2, 0], a[0, 2], a[3, 0] = 2e-6, -1.5e-6, 4e-9
        b[0, 2], b[1, 1], b[0, 3] = 1.8e-6, 1e-6, -3e-9
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


def _night(tmp_path, n=5, shape=(90, 110)):
    """n dithered, rotated frames (one with SIP) of one star field, with cosmic rays."""
    rng = np.random.default_rng(1)
    sky_shape = (200, 220)
    sky_wcs = _wcs(sky_shape, 150.0, 30.0, 0.0, 0.8)
    yy, xx = np.mgrid[: sky_shape[0], : sky_shape[1]]
    sky = np.full(sky_shape, 100.0)
    for _ in range(40):
        x0, y0 = rng.uniform(0, sky_shape[1]), rng.uniform(0, sky_shape[0])
        sky += rng.uniform(200, 2000) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 6.0)
    paths = []
    for k in range(n):
        w = _wcs(shape, 150.0 + rng.uniform(-4, 4) / 3600, 30.0 + rng.uniform(-4, 4) / 3600,
                 rng.uniform(-15, 15), 1.0, sip=(k == 2))
        data, _ = reproject_interp((sky, sky_wcs), w, shape_out=shape, order="bilinear")
        data = (data + rng.normal(0, 3, shape)).astype(np.float32)
        data[rng.random(shape) < 0.01] += 3000  # cosmic rays
        hdr = w.to_header(relax=True)
        hdr["EXPTIME"] = 30.0 + 10 * k
        hdr["BUNIT"] = "adu"
        p = tmp_path / f"light_{k}.fits"
        fits.PrimaryHDU(data, header=hdr).writeto(p)
        paths.append(str(p))
    return paths


def _reference_cube(paths, grid_wcs, grid_shape):
    cube = []
    for p in paths:
        with fits.open(p) as hl, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, _ = reproject_interp(hl[0], grid_wcs, shape_out=grid_shape, order="bilinear")
        cube.append(out.astype(np.float32))
    return np.array(cube)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return _night(tmp_path_factory.mktemp("night"))


def test_median_stack_matches_reproject_then_nanmedian(night):
    result = skystack.stack(night, method="median", backend="cpu", max_tile_rows=17)
    grid_wcs = result.wcs
    cube = _reference_cube(night, grid_wcs, result.shape)
    covered = np.isfinite(cube)
    np.testing.assert_array_equal(result.coverage, covered.sum(0))
    exptimes = np.array([30.0 + 10 * k for k in range(len(night))])
    np.testing.assert_allclose(result.expmap, np.tensordot(exptimes, covered, 1), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.nanmedian(cube, axis=0)
    np.testing.assert_allclose(result.data, expected, rtol=1e-5, atol=1e-3, equal_nan=True)
    assert result.coverage.max() == len(night) and (result.coverage == 0).sum() < result.size // 2


def test_sigclip_stack_on_reference_grid_matches_astropy(night, tmp_path):
    out = tmp_path / "stack.fits"
    result = skystack.stack(night, out, reference=night[0], method="mean", reject="sigclip",
                            sigma=3.0, maxiters=5, backend="cpu")
    ref_wcs = WCS(fits.getheader(night[0]))
    assert result.shape == fits.getdata(night[0]).shape
    cube = _reference_cube(night, ref_wcs, result.shape)
    clipped = sigma_clip(cube, sigma=3.0, maxiters=5, axis=0, cenfunc="median", stdfunc="std")
    expected = clipped.mean(axis=0).filled(np.nan)
    np.testing.assert_allclose(result.data, expected, rtol=1e-4, atol=1e-3, equal_nan=True)
    with fits.open(out) as hl:
        names = [h.name for h in hl]
        assert names == ["PRIMARY", "UNCERT", "MASK", "COUNT", "EXPMAP"]
        np.testing.assert_array_equal(hl["COUNT"].data, np.isfinite(cube).sum(0))
        w = WCS(hl[0].header)
        np.testing.assert_allclose(w.wcs.crval, ref_wcs.wcs.crval)
        assert hl[0].header["NCOMBINE"] == len(night)
        assert hl["EXPMAP"].header["BUNIT"] == "s"


def test_intersection_grid_is_fully_covered(night):
    union = skystack.stack(night, method="mean", backend="cpu")
    inter = skystack.stack(night, method="mean", crop="intersection", backend="cpu")
    assert inter.size < union.size
    # The bounding box of the common area: the centre is covered by every frame.
    r, c = inter.shape[0] // 2, inter.shape[1] // 2
    assert inter.coverage[r, c] == len(night)


def test_reproject_single_frame_matches_reproject_interp(night, tmp_path):
    target = fits.getheader(night[0])
    target["NAXIS"], target["NAXIS1"], target["NAXIS2"] = 2, 120, 100
    out = tmp_path / "r.fits"
    ccd = skystack.reproject(night[2], target, out, backend="cpu")
    with fits.open(night[2]) as hl:
        expected, foot = reproject_interp(hl[0], target, order="bilinear")
    np.testing.assert_allclose(ccd.data, expected, rtol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(ccd.footprint, foot)
    with fits.open(out) as hl:
        assert hl[1].name == "FOOTPRINT"
        np.testing.assert_array_equal(hl[1].data, foot.astype(np.uint8))
    arr = fits.getdata(night[1])
    ccd2 = skystack.reproject((arr, WCS(fits.getheader(night[1]))), target, backend="cpu")
    assert np.isfinite(ccd2.data).any()


def test_cli_stack_and_reproject(night, tmp_path, capsys):
    out = tmp_path / "cli.fits"
    assert main(["stack", *night, "-o", str(out), "--method", "median", "--backend", "cpu",
                 "-q"]) == 0
    assert fits.getheader(out, "EXPMAP")["EXTNAME"] == "EXPMAP"
    assert main(["stack", *night, "-o", str(out), "--backend", "cpu", "-q"]) == 2
    assert "exists" in capsys.readouterr().err
    r = tmp_path / "one.fits"
    assert main(["reproject", night[1], "-o", str(r), "--reference", night[0], "-q"]) == 0
    assert fits.getdata(r).shape == fits.getdata(night[0]).shape
    with pytest.raises(SystemExit) as exc:  # argparse: --reference or --grid-header needed
        main(["reproject", night[1], "-o", str(tmp_path / "x.fits"), "-q"])
    assert exc.value.code == 2


def test_frame_without_wcs_is_a_one_line_error(night, tmp_path, capsys):
    bad = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.zeros((90, 110), np.float32)).writeto(bad)
    assert main(["stack", night[0], str(bad), "-o", str(tmp_path / "o.fits"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowcs.fits" in err and "\n" not in err
    assert not (tmp_path / "o.fits").exists()
