"""The CPU core of bilinear reprojection against the independent reference, reproject_interp.

The frame is real-like: 300×400 pixels, TAN-SIP with quadratic and cubic distortion terms of
realistic size (up to ~0.1 px at the corners), rotated 20°; the output grid is rotated by -5°,
has a different pixel scale and is shifted so that it overlaps the frame only in part.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, Sip
from astropy.wcs.utils import pixel_to_pixel

from skystack.errors import SkystackError
from skystack.regrid import (
    choose_step,
    footprint,
    grid_from_header,
    grid_from_reference,
    map_error,
    optimal_grid,
    pixel_area_ratio,
    pixel_map,
    resample,
)

reproject = pytest.importorskip("reproject")

SHAPE_IN = (300, 400)
SHAPE_OUT = (320, 380)
ARCSEC = 1 / 3600


def make_wcs(shape, rot_deg, crval, scale_arcsec=1.2, sip=True, crpix=None):
    """TAN(-SIP) WCS rotated by ``rot_deg``, north up at 0°, east left."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = crval
    w.wcs.crpix = crpix or [nx / 2 + 0.37, ny / 2 - 0.21]
    t = np.radians(rot_deg)
    w.wcs.cd = scale_arcsec * ARCSEC * np.array([[-np.cos(t), np.sin(t)],
                                                 [np.sin(t), np.cos(t)]])
    if sip:
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[2, 0], a[1, 1], a[0, 2], a[3, 0], a[1, 2] = 2.1e-6, -1.3e-6, 8e-7, 1.5e-10, -9e-11
        b[2, 0], b[1, 1], b[0, 2], b[0, 3], b[2, 1] = -7e-7, 1.8e-6, -1.1e-6, 1.2e-10, 6e-11
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    return w


def exact_map(wcs_in, wcs_out, shape_out):
    """reproject's per-pixel coordinates: astropy pixel_to_pixel with the 1 px round trip."""
    yy, xx = np.mgrid[0:shape_out[0], 0:shape_out[1]].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = (np.array(a, dtype=np.float64) for a in pixel_to_pixel(wcs_out, wcs_in, xx, yy))
        xb, yb = pixel_to_pixel(wcs_in, wcs_out, x, y)
        bad = (np.abs(xb - xx) > 1) | (np.abs(yb - yy) > 1)
    x[bad] = np.nan
    y[bad] = np.nan
    return x, y


def near_edges(c, n, edges):
    """Coordinates within 1e-6 px of a rule boundary, where float64 rounding may flip a pixel."""
    if edges == "integer":  # bilinear window start floor(c)
        frac = np.abs(c - np.round(c))
    else:  # nearest: floor(c + 0.5)
        frac = np.abs(c - 0.5 - np.round(c - 0.5))
    bounds = np.minimum(np.abs(c + 0.5), np.abs(c - (n - 0.5)))
    return (frac < 1e-6) | (bounds < 1e-6)


@pytest.fixture(scope="module")
def scene():
    wcs_in = make_wcs(SHAPE_IN, 20.0, [150.1, 2.2])
    wcs_out = make_wcs(SHAPE_OUT, -5.0, [150.1 + 80 * 1.2 * ARCSEC, 2.2 + 60 * 1.2 * ARCSEC],
                       scale_arcsec=1.1, sip=False)
    rng = np.random.default_rng(20240601)
    image = (1000 + 50 * rng.standard_normal(SHAPE_IN)).astype(np.float32)
    image[rng.integers(0, SHAPE_IN[0], 40), rng.integers(0, SHAPE_IN[1], 40)] = np.nan
    image[100:104, 200:207] = np.nan
    image[:, 0] = np.nan  # a whole NaN border column
    x_exact, y_exact = exact_map(wcs_in, wcs_out, SHAPE_OUT)
    ref = {}
    for order in ("bilinear", "nearest-neighbor"):
        ref[order] = reproject.reproject_interp((image, wcs_in), wcs_out, SHAPE_OUT, order=order)
    x, y = pixel_map(wcs_in, wcs_out, SHAPE_OUT)
    return dict(wcs_in=wcs_in, wcs_out=wcs_out, image=image, x=x, y=y, x_exact=x_exact,
                y_exact=y_exact, ref=ref)


def test_pixel_map_matches_astropy(scene):
    x, y, xe, ye = scene["x"], scene["y"], scene["x_exact"], scene["y_exact"]
    assert x.dtype == np.float64 and x.shape == SHAPE_OUT
    np.testing.assert_array_equal(np.isnan(x), np.isnan(xe))
    err = np.hypot(x - xe, y - ye)
    assert np.nanmax(err) < 1e-3  # required
    assert np.nanmax(err) < 1e-6  # measured ~1e-9 px
    inside = (xe > -0.5) & (xe < SHAPE_IN[1] - 0.5) & (ye > -0.5) & (ye < SHAPE_IN[0] - 0.5)
    assert 0.2 < inside.mean() < 0.9  # a partial overlap
    assert map_error(scene["wcs_in"], scene["wcs_out"], SHAPE_OUT, in_shape=SHAPE_IN) < 1e-6
    assert choose_step(scene["wcs_in"], scene["wcs_out"], SHAPE_OUT) == 32


def test_pixel_map_bands_are_slices_of_the_whole(scene):
    for rows in (slice(0, 1), slice(37, 101), slice(250, None), slice(319, 320)):
        bx, by = pixel_map(scene["wcs_in"], scene["wcs_out"], SHAPE_OUT, rows=rows)
        np.testing.assert_allclose(bx, scene["x"][rows], rtol=0, atol=1e-9)
        np.testing.assert_allclose(by, scene["y"][rows], rtol=0, atol=1e-9)
    ex, ey = pixel_map(scene["wcs_in"], scene["wcs_out"], SHAPE_OUT, rows=slice(10, 10))
    assert ex.shape == ey.shape == (0, SHAPE_OUT[1])


def test_pixel_map_from_threads(scene):
    """astropy WCS objects are not thread-safe; pixel_map serialises its astropy calls."""
    shape, step = (400, 400), 4  # many nodes per band, so that unguarded calls would overlap
    x, _ = pixel_map(scene["wcs_in"], scene["wcs_out"], shape, step=step)
    bands = [slice(0, 200), slice(200, 400)]
    for _ in range(5):
        with ThreadPoolExecutor(2) as pool:
            maps = list(pool.map(
                lambda r: pixel_map(scene["wcs_in"], scene["wcs_out"], shape, rows=r, step=step),
                bands))
        for (bx, _), rows in zip(maps, bands):
            np.testing.assert_allclose(bx, x[rows], rtol=0, atol=1e-9)


def test_pixel_map_tiny_and_fine_grids(scene):
    x, y = pixel_map(scene["wcs_in"], scene["wcs_out"], SHAPE_OUT, step=8)
    assert np.nanmax(np.hypot(x - scene["x_exact"], y - scene["y_exact"])) < 1e-6
    for shape in ((1, 1), (3, 2), (5, 7)):
        x, y = pixel_map(scene["wcs_in"], scene["wcs_out"], shape)
        xe, ye = exact_map(scene["wcs_in"], scene["wcs_out"], shape)
        np.testing.assert_allclose(x, xe, atol=1e-9)
        np.testing.assert_allclose(y, ye, atol=1e-9)


def test_bilinear_matches_reproject(scene):
    values = resample(scene["image"], scene["x"], scene["y"])
    ref, ref_fp = scene["ref"]["bilinear"]
    assert values.dtype == np.float32
    both = np.isfinite(values) & np.isfinite(ref)
    rel = np.abs(values[both] - ref[both]) / np.abs(ref[both])
    assert rel.max() < 1e-5  # measured ~6e-8 (float32 output)
    xe, ye = scene["x_exact"], scene["y_exact"]
    ambiguous = near_edges(xe, SHAPE_IN[1], "integer") | near_edges(ye, SHAPE_IN[0], "integer")
    differ = footprint(values) != (ref_fp > 0)
    assert not np.any(differ & ~ambiguous)
    # The comparison is meaningful: input NaNs punch holes inside the overlap.
    inside = (xe > 1) & (xe < SHAPE_IN[1] - 2) & (ye > 1) & (ye < SHAPE_IN[0] - 2)
    assert np.sum(inside & ~footprint(values)) > 100


def test_nearest_matches_reproject(scene):
    values = resample(scene["image"], scene["x"], scene["y"], method="nearest")
    ref, ref_fp = scene["ref"]["nearest-neighbor"]
    xe, ye = scene["x_exact"], scene["y_exact"]
    ambiguous = near_edges(xe, SHAPE_IN[1], "half") | near_edges(ye, SHAPE_IN[0], "half")
    both = np.isfinite(values) & np.isfinite(ref) & ~ambiguous
    np.testing.assert_array_equal(values[both], ref[both].astype(np.float32))
    assert not np.any((footprint(values) != (ref_fp > 0)) & ~ambiguous)


def _reproject_rules(image, x, y, order):
    """The exact sampling step of reproject_interp (clip, then scipy map_coordinates)."""
    from reproject._array_utils import map_coordinates

    coords = np.array([np.ravel(y), np.ravel(x)], dtype=np.float64)
    out = np.empty(coords.shape[1])
    return map_coordinates(image, coords, order=order, cval=np.nan, mode="constant", output=out)


@pytest.mark.parametrize("shape", [(4, 5), (1, 5), (4, 1), (2, 2)])
def test_edge_and_nan_rules(shape):
    ny, nx = shape
    rng = np.random.default_rng(3)
    image = rng.uniform(1, 2, shape).astype(np.float32)
    if ny > 1 and nx > 2:
        image[1, 2] = np.nan
    special = np.array([-0.7, -0.5, -0.5000001, -0.2, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.2,
                        np.nextafter(0.5, 0.0), np.nan])
    cx = np.concatenate([special, np.array([nx - 1.0, nx - 0.75, nx - 0.5,
                                            np.nextafter(nx - 0.5, 0.0), nx - 0.5000001])])
    cy = np.concatenate([special, np.array([ny - 1.0, ny - 0.75, ny - 0.5,
                                            np.nextafter(ny - 0.5, 0.0), ny - 0.5000001])])
    x, y = (a.ravel() for a in np.meshgrid(cx, cy))
    for method, order in (("bilinear", 1), ("nearest", 0)):
        got = resample(image, x, y, method=method)
        want = _reproject_rules(image, x, y, order)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=method)
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-6, err_msg=method)


def test_resample_shapes_and_errors(scene):
    image = scene["image"]
    one = resample(image, np.array([10.2, 11.0]), np.array([5.0, 6.5]))
    assert one.shape == (2,) and one.dtype == np.float32
    assert resample(image.astype(">f8"), 3.0, 4.0).shape == ()
    with pytest.raises(SkystackError, match="unknown resampling method"):
        resample(image, np.zeros(2), np.zeros(2), method="cubic")
    with pytest.raises(SkystackError, match="2-D image"):
        resample(image[0], np.zeros(2), np.zeros(2))


def test_invalid_world_and_roundtrip(scene):
    """A huge output grid reaches beyond the horizon of the input's projection."""
    wide = WCS(naxis=2)
    wide.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wide.wcs.crval = [150.1, 2.2]
    wide.wcs.crpix = [200.3, 190.7]
    wide.wcs.cdelt = [-0.6, 0.6]
    wide.wcs.set()
    shape = (400, 420)
    xe, ye = exact_map(scene["wcs_in"], wide, shape)
    assert np.isnan(xe).mean() > 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = pixel_map(scene["wcs_in"], wide, shape)
        assert np.all(np.isnan(x[np.isnan(xe)]))  # NaN propagates, never the reverse
        xx, yy = pixel_map(scene["wcs_in"], wide, shape, exact_near_invalid=True)
    np.testing.assert_array_equal(np.isnan(xx), np.isnan(xe))
    ok = ~np.isnan(xe)
    np.testing.assert_allclose(xx[ok], xe[ok], atol=1e-9)


def test_other_celestial_frame(scene):
    """A galactic output grid goes through astropy's frame transformation."""
    gal = WCS(naxis=2)
    gal.wcs.ctype = ["GLON-TAN", "GLAT-TAN"]
    gal.wcs.crval = [236.83, 41.05]  # near RA 150.1, Dec 2.2
    gal.wcs.crpix = [100, 80]
    gal.wcs.cdelt = [-1.5 * ARCSEC, 1.5 * ARCSEC]
    gal.wcs.set()
    x, y = pixel_map(scene["wcs_in"], gal, (150, 200))
    xe, ye = exact_map(scene["wcs_in"], gal, (150, 200))
    assert np.nanmax(np.hypot(x - xe, y - ye)) < 1e-6


def test_pixel_area_ratio(scene):
    ratio = pixel_area_ratio(scene["x"], scene["y"])
    centre = ratio[150:170, 180:200]
    np.testing.assert_allclose(centre, (1.1 / 1.2) ** 2, rtol=2e-3)
    with pytest.raises(SkystackError):
        pixel_area_ratio(scene["x"][:1], scene["y"][:1])


def _corners(wcs, shape):
    ny, nx = shape
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    return wcs.pixel_to_world(x, y)


def test_optimal_grid_union_covers_every_frame():
    frames = [
        (make_wcs(SHAPE_IN, 20.0, [150.1, 2.2]), SHAPE_IN),
        (make_wcs((250, 350), -35.0, [150.16, 2.25], scale_arcsec=1.0), (250, 350)),
        (make_wcs((300, 400), 80.0, [150.05, 2.12], scale_arcsec=1.5, sip=False), (300, 400)),
    ]
    wcs, shape = optimal_grid(frames)
    assert wcs.wcs.ctype[0].endswith("-TAN") and wcs.wcs.ctype[1].endswith("-TAN")
    cd = wcs.pixel_scale_matrix
    assert cd[0, 0] < 0 < cd[1, 1] and abs(cd[0, 1]) < 1e-15 and abs(cd[1, 0]) < 1e-15
    np.testing.assert_allclose(cd[1, 1] * 3600, 1.2)  # median of 1.0, 1.2, 1.5
    lo = np.array([np.inf, np.inf])
    hi = -lo
    for w, s in frames:
        px, py = wcs.world_to_pixel(_corners(w, s))
        tol = 0.005 + 1e-9  # excesses below 0.01 px are not rounded up to a pixel
        assert np.all(px >= -0.5 - tol) and np.all(px <= shape[1] - 0.5 + tol)
        assert np.all(py >= -0.5 - tol) and np.all(py <= shape[0] - 0.5 + tol)
        lo = np.minimum(lo, [px.min(), py.min()])
        hi = np.maximum(hi, [px.max(), py.max()])
    assert np.all(lo < 0.5) and hi[0] > shape[1] - 1.5 and hi[1] > shape[0] - 1.5  # tight
    # A FITS header is accepted in place of a WCS.
    header = frames[0][0].to_header(relax=True)
    same, same_shape = optimal_grid([(header, frames[0][1])] + frames[1:])
    assert same_shape == shape
    np.testing.assert_allclose(same.wcs.crpix, wcs.wcs.crpix)


def test_optimal_grid_known_intersection():
    # Two unrotated frames 400 × 300 px, offset by (+100, +50) px: common part 300 × 250 px.
    a = make_wcs(SHAPE_IN, 0.0, [150.1, 2.2], sip=False, crpix=[200.5, 150.5])
    b = make_wcs(SHAPE_IN, 0.0, [150.1, 2.2], sip=False, crpix=[100.5, 100.5])
    wcs, shape = optimal_grid([(a, SHAPE_IN), (b, SHAPE_IN)], crop="intersection")
    assert shape == (250, 300)
    # The corners of the common region (a's pixels x 99.5..399.5, y 49.5..299.5) are inside
    # (to the 0.005 px overhang that optimal_grid allows).
    px, py = wcs.world_to_pixel(a.pixel_to_world(np.array([99.5, 399.5, 399.5, 99.5]),
                                                 np.array([49.5, 49.5, 299.5, 299.5])))
    assert np.all(np.abs(np.concatenate([px - np.clip(px, -0.5, shape[1] - 0.5),
                                         py - np.clip(py, -0.5, shape[0] - 0.5)])) < 0.005)
    union, ushape = optimal_grid([(a, SHAPE_IN), (b, SHAPE_IN)])
    assert ushape == (350, 500)


def test_optimal_grid_reference_orientation():
    frame = make_wcs(SHAPE_IN, 20.0, [150.1, 2.2])
    ref = make_wcs(SHAPE_IN, 30.0, [150.0, 2.0], scale_arcsec=2.0, sip=False)
    wcs, _ = optimal_grid([(frame, SHAPE_IN)], reference=ref)
    m = wcs.pixel_scale_matrix
    r = ref.pixel_scale_matrix
    np.testing.assert_allclose(m / np.sqrt(abs(np.linalg.det(m))),
                               r / np.sqrt(abs(np.linalg.det(r))), atol=1e-12)
    np.testing.assert_allclose(np.sqrt(abs(np.linalg.det(m))) * 3600, 1.2)


def test_optimal_grid_errors():
    a = make_wcs(SHAPE_IN, 0.0, [150.1, 2.2], sip=False)
    far = make_wcs(SHAPE_IN, 0.0, [151.1, 2.2], sip=False)
    with pytest.raises(SkystackError, match="no sky in common") as err:
        optimal_grid([(a, SHAPE_IN), (far, SHAPE_IN)], crop="intersection")
    assert "\n" not in str(err.value)
    linear = WCS(naxis=2)
    linear.wcs.ctype = ["LINEAR", "LINEAR"]
    with pytest.raises(SkystackError, match="frame 1: WCS is not celestial"):
        optimal_grid([(a, SHAPE_IN), (linear, SHAPE_IN)])
    with pytest.raises(SkystackError, match="unknown crop"):
        optimal_grid([(a, SHAPE_IN)], crop="median")
    with pytest.raises(SkystackError, match="at least one frame"):
        optimal_grid([])
    with pytest.raises(SkystackError, match="not celestial"):
        pixel_map(a, linear, (10, 10))


def test_grid_from_header_and_reference(tmp_path):
    w = make_wcs(SHAPE_IN, 20.0, [150.1, 2.2])
    header = w.to_header(relax=True)
    with pytest.raises(SkystackError, match="NAXIS1 and NAXIS2 missing"):
        grid_from_header(header)
    header["NAXIS"] = 2
    header["NAXIS1"] = SHAPE_IN[1]
    header["NAXIS2"] = SHAPE_IN[0]
    got, shape = grid_from_header(header)
    assert shape == SHAPE_IN
    assert got.sip is not None
    xy = np.array([[0.0, 0.0], [399.0, 299.0], [123.4, 56.7]])
    np.testing.assert_allclose(got.all_pix2world(xy, 0), w.all_pix2world(xy, 0), atol=1e-12)

    path = tmp_path / "ref.fits"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.ImageHDU(np.zeros(SHAPE_IN, np.float32), header=header)]).writeto(path)
    got2, shape2 = grid_from_reference(path)
    assert shape2 == SHAPE_IN
    np.testing.assert_allclose(got2.all_pix2world(xy, 0), w.all_pix2world(xy, 0), atol=1e-12)
    assert grid_from_reference(header)[1] == SHAPE_IN

    with pytest.raises(SkystackError, match="no such file"):
        grid_from_reference(tmp_path / "missing.fits")
    (tmp_path / "junk.fits").write_text("not a FITS file at all")
    with pytest.raises(SkystackError, match="junk.fits"):
        grid_from_reference(tmp_path / "junk.fits")
    plain = fits.Header({"NAXIS": 2, "NAXIS1": 10, "NAXIS2": 10})
    with pytest.raises(SkystackError, match="not celestial"):
        grid_from_header(plain)
