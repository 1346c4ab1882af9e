"""Drizzle co-adds (skystack.drizzling) against the drizzle package called on whole images,
against known truth (flux of a star, frame counts, scatter), and their one-line errors."""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from drizzle.resample import Drizzle

from skystack.api_reproject import stack
from skystack.cli import main
from skystack.errors import SkystackError


def _wcs(dx: float, dy: float, rot_deg: float = 0.0, size: int = 48) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [size / 2 + 0.5 + dx, size / 2 + 0.5 + dy]
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = np.array([[-c, s], [s, c]]) / 3600.0
    return w


def _hdus(shifts, data):
    out = []
    for (dx, dy, rot), d in zip(shifts, data):
        h = _wcs(dx, dy, rot, d.shape[0]).to_header()
        h["EXPTIME"] = 10.0
        out.append(fits.ImageHDU(d.astype(np.float32), header=h))
    return out


def _reference(hdus, grid_wcs, shape, weights, pixfrac):
    """The drizzle package on whole frames, pixel maps from astropy at every pixel."""
    drz = Drizzle(kernel="square", out_shape=shape, disable_ctx=True)
    for h, w in zip(hdus, weights):
        rows, cols = h.data.shape
        y, x = np.mgrid[0:rows, 0:cols].astype(float)
        gx, gy = grid_wcs.world_to_pixel(WCS(h.header).pixel_to_world(x, y))
        good = np.isfinite(h.data)
        drz.add_image(np.where(good, h.data, 0).astype(np.float32), 1.0, np.dstack([gx, gy]),
                      weight_map=np.where(good, w, 0).astype(np.float32), pixfrac=pixfrac)
    return drz.out_img, drz.out_wht


def test_matches_drizzle_package_and_tiles_do_not_matter():
    rng = np.random.default_rng(3)
    shifts = [(0, 0, 0), (0.37, 0.61, 1.5), (1.52, -0.44, -2.0), (-0.71, 0.23, 0.5)]
    data = [rng.normal(100, 5, (48, 48)) for _ in shifts]
    data[2][10:20, 5:15] = np.nan  # masked: weight 0 there
    hdus = _hdus(shifts, data)
    weights = [1.0, 2.0, 0.5, 3.0]
    whole = stack(hdus, interp="drizzle", pixfrac=0.6, weights=weights, backend="cpu")
    img, wht = _reference(hdus, whole.wcs, whole.data.shape, weights, 0.6)
    inner = (slice(1, -1), slice(1, -1))  # skystack drizzles the edge pixels as inner ones
    covered = wht[inner] > 0
    np.testing.assert_allclose(whole.data[inner][covered], img[inner][covered], rtol=2e-5)
    np.testing.assert_allclose(whole.expmap[inner], wht[inner], rtol=2e-5, atol=2e-5)
    assert np.all(np.isnan(whole.data[inner][~covered]))
    assert whole.meta["INTERP"] == "drizzle" and whole.meta["DRZPFRAC"] == 0.6
    assert whole.meta["UNCMETH"] == "scatter" and whole.meta["DRZBKND"] == "cpu"
    tiled = stack(hdus, interp="drizzle", pixfrac=0.6, weights=weights, backend="cpu",
                  max_tile_rows=5)
    np.testing.assert_array_equal(tiled.data, whole.data)
    np.testing.assert_array_equal(tiled.uncertainty.array, whole.uncertainty.array)
    np.testing.assert_array_equal(tiled.coverage, whole.coverage)
    np.testing.assert_array_equal(tiled.expmap, whole.expmap)



@pytest.mark.parametrize("rows", [1, 2, 3])
def test_bands_reached_by_a_single_input_row_equal_the_whole_drizzle(rows):
    # Frames offset by whole rows and a bit: thin bands at a frame's top or bottom edge get
    # drops from that frame's edge row only, a box the drizzle package refuses on its own.
    rng = np.random.default_rng(5)
    shifts = [(0, 0, 0), (0.3, 6.45, 0.4), (-0.2, -7.3, -0.3)]
    data = [rng.normal(50, 3, (24, 24)) for _ in shifts]
    hdus = _hdus(shifts, data)
    whole = stack(hdus, interp="drizzle", backend="cpu")
    assert whole.data.shape[0] > 30  # the grid reaches past every frame's edge rows
    banded = stack(hdus, interp="drizzle", backend="cpu", max_tile_rows=rows)
    np.testing.assert_array_equal(banded.data, whole.data)
    np.testing.assert_array_equal(banded.uncertainty.array, whole.uncertainty.array)
    np.testing.assert_array_equal(banded.coverage, whole.coverage)
    np.testing.assert_array_equal(banded.expmap, whole.expmap)

def _star(shape, x0, y0, flux, sigma=1.5):
    from scipy.special import erf

    def edges(n, c):
        e = (np.arange(n + 1) - 0.5 - c) / (np.sqrt(2) * sigma)
        return np.diff(0.5 * erf(e))

    return flux * np.outer(edges(shape[0], y0), edges(shape[1], x0))


def test_flux_of_a_star_is_conserved_on_a_finer_grid_with_small_drops():
    flux = 5000.0
    shifts = [(0, 0, 0), (0.5, 0.25, 0), (0.25, 0.5, 0), (0.75, 0.75, 0), (0.5, 0.0, 0),
              (0.0, 0.5, 0)]
    # The star at one sky position: its frame pixel position moves with each frame's CRPIX.
    data = [_star((40, 40), 20.0 + dx, 19.0 + dy, flux) for dx, dy, _ in shifts]
    ccd = stack(_hdus(shifts, data), interp="drizzle", pixfrac=0.5, drizzle_scale=0.5,
                conserve_flux=True, backend="cpu")
    assert ccd.data.shape[0] >= 80 and ccd.meta["DRZSCALE"] == 0.5
    assert np.nansum(ccd.data) == pytest.approx(flux, rel=0.01)
    # Surface brightness without --conserve-flux: four times the flux per finer pixel.
    sb = stack(_hdus(shifts, data), interp="drizzle", pixfrac=0.5, drizzle_scale=0.5,
               backend="cpu")
    assert np.nansum(sb.data) == pytest.approx(4 * flux, rel=0.01)


def test_count_and_scatter_on_whole_pixel_shifts():
    rng = np.random.default_rng(5)
    shifts = [(0, 0, 0), (1, 0, 0), (0, 2, 0), (3, 1, 0), (2, 3, 0)]
    data = [rng.normal(50, 4, (32, 32)) for _ in shifts]
    data[1][8:16, 4:12] = np.nan  # frame 1 masked there: not counted there
    ccd = stack(_hdus(shifts, data), interp="drizzle", backend="cpu")
    # Grid pixel of frame pixel (r, c): shifted by the CRPIX offsets relative to the grid.
    gx0, gy0 = (np.round(v) for v in ccd.wcs.world_to_pixel(
        _wcs(*shifts[0], 32).pixel_to_world(0, 0)))
    stackv = np.full((len(shifts), *ccd.data.shape), np.nan)
    for k, ((dx, dy, _), d) in enumerate(zip(shifts, data)):
        r0, c0 = int(gy0 - dy), int(gx0 - dx)
        stackv[k, r0:r0 + 32, c0:c0 + 32] = d
    expected_count = np.isfinite(stackv).sum(axis=0)
    np.testing.assert_array_equal(ccd.coverage, expected_count)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty / single-value pixels
        mean = np.nanmean(stackv, axis=0)
        sem = np.nanstd(stackv, axis=0, ddof=1) / np.sqrt(expected_count)
    ok = expected_count > 0
    np.testing.assert_allclose(ccd.data[ok], mean[ok], rtol=1e-5)
    two = expected_count >= 2
    np.testing.assert_allclose(ccd.uncertainty.array[two], sem[two], rtol=2e-3, atol=1e-3)
    assert np.all(np.isnan(ccd.uncertainty.array[expected_count == 1]))


@pytest.mark.parametrize("kwargs, message", [
    ({"interp": "drizzle", "reject": "sigclip"}, "--reject sigclip cannot apply"),
    ({"interp": "drizzle", "pixfrac": 0.0}, "invalid --pixfrac"),
    ({"interp": "drizzle", "pixfrac": 1.5}, "invalid --pixfrac"),
    ({"interp": "drizzle", "method": "median"}, "--method median"),
    ({"interp": "bilinear", "pixfrac": 0.5}, "--pixfrac applies to --interp drizzle only"),
])
def test_one_line_errors(kwargs, message):
    hdus = _hdus([(0, 0, 0)], [np.ones((16, 16))])
    with pytest.raises(SkystackError, match=message) as err:
        stack(hdus, backend="cpu", **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("shape", [(30, 1), (1, 30)])
def test_frames_one_pixel_wide_are_a_one_line_error(shape):
    # Without neighbours a pixel's drop has no footprint: the product would be all NaN.
    hdus = _hdus([(0, 0, 0), (0.5, 0.5, 0)], [np.ones(shape), np.ones(shape)])
    with pytest.raises(SkystackError, match="drizzle needs frames of at least 2x2") as err:
        stack(hdus, backend="cpu", interp="drizzle")
    assert "\n" not in str(err.value)


def test_cli_drizzle_and_its_error(tmp_path, capsys):
    rng = np.random.default_rng(2)
    paths = []
    for k, h in enumerate(_hdus([(0, 0, 0), (0.5, 0.5, 0)],
                                [rng.normal(10, 1, (24, 24)) for _ in range(2)])):
        paths.append(str(tmp_path / f"f{k}.fits"))
        fits.PrimaryHDU(h.data, h.header).writeto(paths[-1])
    out = str(tmp_path / "d.fits")
    assert main(["stack", *paths, "-o", out, "--interp", "drizzle", "--pixfrac", "0.8",
                 "--drizzle-scale", "0.5", "--backend", "cpu", "-q"]) == 0
    with fits.open(out) as hdul:
        assert hdul[0].data.shape == (50, 50) and hdul[0].header["DRZKERN"] == "square"
        assert "EXPMAP" in hdul and hdul["EXPMAP"].header["BUNIT"] == ""
    assert main(["stack", *paths, "-o", out, "--overwrite", "--interp", "drizzle",
                 "--reject", "sigclip", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot apply to --interp drizzle" in err[0]
