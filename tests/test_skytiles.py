"""The sky tessellation (skystack.regrid.skytiles): checked with astropy's own projections and
spherical geometry, not with the module's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from skystack.errors import SkystackError
from skystack.regrid.skytiles import SkyTiling, tile_from_header, tiles_touching


def _random_sky(n, seed, *, with_edges=True):
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))  # uniform on the sphere
    if with_edges:  # the awkward places: RA wrap, poles, ring edges
        ra = np.concatenate([ra, [0.0, 359.9999, 0.0, 12.3, 359.99, 180.0, 0.001]])
        dec = np.concatenate([dec, [0.0, 0.0, 90.0, -90.0, 89.999, -89.6, -0.5]])
    return ra, dec


def _pixel_of(tile, ra, dec):
    """0-based pixel position of (ra, dec) on the tile's grid, by astropy."""
    x, y = tile.wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg", frame="icrs"))
    return float(x), float(y)


def _inset(tile, x, y):
    """How far (px) a position lies inside the tile's pixel area (negative: outside)."""
    rows, cols = tile.shape
    return min(x + 0.5, cols - 0.5 - x, y + 0.5, rows - 0.5 - y)


def _in_core(tile, ra, dec):
    lo, hi = tile.dec_range
    if not (lo <= dec < hi or (hi == 90.0 and dec == 90.0)):
        return False
    a, b = tile.ra_range
    return a <= ra % 360.0 < b


@pytest.mark.parametrize("size,scale", [(1.0, 3.6), (0.3, 0.5)])
def test_every_point_in_exactly_one_core_well_inside_its_tile(size, scale):
    tiling = SkyTiling(size, scale)
    ra, dec = _random_sky(400, 1)
    for r, d in zip(ra, dec):
        tile = tiling.tile_at(r, d)
        assert _in_core(tile, r, d), (r, d, tile)
        # No other tile nearby claims the point (cores are disjoint).
        near = tiling.candidates(r - 3 * size, r + 3 * size, d - 3 * size, d + 3 * size)
        owners = [t.name for t in near if _in_core(t, r, d)]
        assert owners == [tile.name], (r, d, owners)
        # The core lies inside the tile's image, at least the margin from its edges.
        x, y = _pixel_of(tile, r, d)
        assert _inset(tile, x, y) >= tiling.margin - 1e-6, (r, d, tile.name)


def test_neighbours_share_the_margin():
    """A point within 0.9 margin of a core's edge lies in the neighbour's image too: both
    tiles of every pair of neighbours cover a strip along their common edge."""
    tiling = SkyTiling(0.5, 1.0, margin=40)
    step = 0.9 * tiling.margin * tiling.scale  # deg
    ra, dec = _random_sky(40, 2)
    rng = np.random.default_rng(3)
    points = []
    for r, d in zip(ra, dec):  # points just inside a core's edges, where neighbours meet
        tile = tiling.tile_at(r, d)
        (a, b), (lo, hi) = tile.ra_range, tile.dec_range
        points += [(a + 1e-7, d), (b - 1e-7, d), (r, lo + 1e-7), (r, min(hi, 90) - 1e-7),
                   (a + 1e-7, lo + 1e-7), (b - 1e-7, min(hi, 90) - 1e-7), (r, d)]
    crossed = 0
    for r, d in points:
        here = SkyCoord(r, d, unit="deg")
        own = tiling.tile_at(r, d).name
        for angle in rng.uniform(0, 360, 3).tolist() + [0, 90, 180, 270]:
            there = here.directional_offset_by(angle * u.deg, step * u.deg)
            other = tiling.tile_at(there.ra.deg, there.dec.deg)
            x, y = _pixel_of(other, r, d)
            assert _inset(other, x, y) >= 0.0, (r, d, angle, other.name)
            crossed += other.name != own
    assert crossed > 300  # the neighbours were really reached


def test_tile_wcs_is_north_up_tan_centred_on_its_core():
    tiling = SkyTiling(1.0, 2.0)
    tile = tiling.tile_at(150.2, 2.2)
    assert tile.name == "1505p020"
    assert list(tile.wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    assert np.allclose(tile.wcs.wcs.cdelt, [-2 / 3600, 2 / 3600])
    rows, cols = tile.shape
    centre = tile.wcs.pixel_to_world((cols - 1) / 2, (rows - 1) / 2)
    assert centre.ra.deg == pytest.approx(150.5) and centre.dec.deg == pytest.approx(2.0)
    # North up: one pixel up raises Dec; east left: one pixel right lowers RA.
    up = tile.wcs.pixel_to_world((cols - 1) / 2, (rows - 1) / 2 + 1)
    right = tile.wcs.pixel_to_world((cols - 1) / 2 + 1, (rows - 1) / 2)
    assert up.dec.deg > centre.dec.deg and right.ra.deg < centre.ra.deg


def test_names_unique_and_rings_as_wide_as_the_tile():
    tiling = SkyTiling(0.25, 1.0)
    names = set()
    for ring in range(tiling.north_cap + 1):
        n = tiling.tiles_in_ring(ring)
        lo, hi = tiling.ring_bounds(ring)
        if 0 < ring < tiling.north_cap:
            widest = 1.0 if lo <= 0 <= hi else max(math.cos(math.radians(lo)),
                                                     math.cos(math.radians(hi)))
            assert 360 / n * widest <= tiling.height + 1e-9  # no tile wider than h on the sky
        for k in {0, n // 2, n - 1}:
            names.add(tiling.tile(ring, k).name)
    assert tiling.tile(0, 0).name == "0000m900" and tiling.tile(tiling.north_cap, 0).name \
        == "0000p900"
    count = sum(len({0, tiling.tiles_in_ring(r) // 2, tiling.tiles_in_ring(r) - 1})
                for r in range(tiling.north_cap + 1))
    assert len(names) == count


def _frame_wcs(ra, dec, scale_arcsec=1.0, rot_deg=0.0, shape=(120, 120)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    s = scale_arcsec / 3600
    c, si = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    w.wcs.cd = [[-s * c, s * si], [s * si, s * c]]
    w.wcs.set()
    return w


def test_frame_on_the_ra_wrap_touches_both_tiles():
    tiling = SkyTiling(0.05, 1.0, margin=16)
    (found,) = tiles_touching([(_frame_wcs(0.0, 0.0), (120, 120))], tiling)
    n = tiling.tiles_in_ring(tiling.ring_of(0.0))
    assert sorted(t.index for t in found) == [0, n - 1]
    assert {t.name for t in found} == {"00003p0000", "35998p0000"}
    # A frame well inside one core touches that tile only.
    (inside,) = tiles_touching([(_frame_wcs(0.025, 0.0, shape=(20, 20)), (20, 20))], tiling)
    assert [t.index for t in inside] == [0]


def test_frame_on_the_pole_touches_the_cap_and_the_ring_all_around():
    tiling = SkyTiling(1.0, 10.0)
    (found,) = tiles_touching([(_frame_wcs(37.0, 90.0, scale_arcsec=10.0,
                                           shape=(500, 500)), (500, 500))], tiling)
    # The frame (1.39 deg across) holds the cap (radius 0.5 deg) and reaches Dec 89.3 - 0.3.
    cap = tiling.tile(tiling.north_cap, 0)
    assert cap.name in {t.name for t in found}
    ring = tiling.north_cap - 1
    assert {t.index for t in found if t.ring == ring} == set(range(tiling.tiles_in_ring(ring)))
    x, y = _pixel_of(cap, 123.0, 90.0)
    assert (x, y) == pytest.approx(((cap.shape[1] - 1) / 2, (cap.shape[0] - 1) / 2))


def test_invalid_tilings_are_one_line_errors():
    for size, scale in [(0, 1), (-1, 1), (20, 1), (1, 0), (float("nan"), 1), (1, 1e-4),
                        (0.001, 10)]:
        with pytest.raises(SkystackError):
            SkyTiling(size, scale)
    with pytest.raises(SkystackError, match="margin"):
        SkyTiling(1, 1, margin=-3)


def test_tile_from_header_names():
    tile = SkyTiling(0.1, 1.0).tile_at(10, 10)
    header = tile.wcs.to_header()
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, tile.shape[1], tile.shape[0]
    assert tile_from_header(header, source="h", default_name="stem").name == "stem"
    header["EXTNAME"] = "EXT"
    assert tile_from_header(header, source="h", default_name="stem").name == "EXT"
    header["TILENAME"] = "mine"
    got = tile_from_header(header, source="h", default_name="stem")
    assert got.name == "mine" and got.shape == tile.shape
    assert (got.ra, got.dec) == pytest.approx((tile.ra, tile.dec))
    del header["NAXIS1"]
    with pytest.raises(SkystackError, match="NAXIS1"):
        tile_from_header(fits.Header(header), source="h", default_name="stem")
