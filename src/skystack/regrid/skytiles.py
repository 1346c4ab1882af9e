"""A fixed tessellation of the sky into tangent-plane tiles, for co-adds on sky tiles.

The tiling follows the "rings" sky maps of survey co-add pipelines (LSST/HSC ``RingsSkyMap``,
DES/DECaLS bricks): the sphere is cut into declination rings of equal height ``h``, with a
polar cap at each pole, and every ring into tiles of equal width in right ascension.

* ``h = 180 / (n_rings + 1)`` degrees with ``n_rings = max(1, round(180 / size) - 1)``, so
  ``h`` is the requested tile size rounded to divide the sphere. Ring 0 is the south cap
  (``dec < -90 + h/2``), rings ``1 .. n_rings`` cover ``-90 + h/2 + (j - 1) h <= dec <
  -90 + h/2 + j h``, ring ``n_rings + 1`` is the north cap (``dec >= 90 - h/2``). A cap is one
  tile centred on its pole (a disc of radius ``h/2``: a tile ``h`` across, like the others).
* Ring ``j`` has ``n = ceil(360 cos(dec_w) / h)`` tiles, ``dec_w`` its edge nearest the
  equator (so no tile is wider than ``h`` on the sky); tile ``k`` covers
  ``k 360/n <= ra < (k + 1) 360/n``. These RA/Dec boxes are the tiles' *cores*: every point of
  the sky is in exactly one core (RA taken modulo 360).
* Each tile has its own gnomonic (``RA---TAN``/``DEC--TAN``, ICRS) WCS with its tangent point
  at the centre of its core, north up and east left (``CDELT = (-scale, +scale)``), and a pixel
  shape that holds the core's projection plus ``margin`` pixels on every side: neighbouring
  tiles share a strip at least ``2 margin`` pixels wide along their common edge.
* Names are the core centre's RA and Dec as in DECaLS brick names: ``1502p022`` is RA 150.2,
  Dec +2.2 (more decimals where tiles are small enough for two names to round alike; see
  :meth:`SkyTiling.name`); the caps are ``0000p900`` and ``0000m900``.

Tiles are made on demand (a tiling of 0.25 deg tiles has about 660 000), so only those a set of
frames touches are ever built (:func:`tiles_touching`). A user's own list of tiles (one FITS
header each) is a list of :class:`SkyTile` from :func:`tile_from_header`.

Pure geometry: nothing here reads pixels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from astropy.coordinates import ICRS, SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from ..errors import SkystackError
from .grid import edge_points, grid_from_header, overlaps_grid

__all__ = ["SkyTile", "SkyTiling", "tiles_touching", "tile_from_header", "MAX_TILE_SIZE_DEG",
           "MAX_TILE_PIXELS"]

# Beyond 10 deg a tangent-plane tile is visibly distorted at its edges (tan 5 deg / 5 deg in
# radians is 1.0025: 0.25 % in scale), and its pixel grid would be huge at survey scales.
MAX_TILE_SIZE_DEG = 10.0
# A tile of more pixels than this on a side is a unit error (size in arcsec, scale in deg).
MAX_TILE_PIXELS = 100_000


@dataclass(frozen=True)
class SkyTile:
    """One sky tile: its ``name``, its grid (``wcs``, ``shape`` = (rows, cols), NumPy order)
    and, for a tile of a :class:`SkyTiling`, its ``ring`` and ``index`` in the ring, its core
    (``ra_range``, ``dec_range`` in degrees, lower bound included, upper excluded; a cap's RA
    range is the whole circle) and centre ``ra``, ``dec`` (degrees). A tile from a user's header
    has ``ring = index = None`` and its centre pixel's position as ``ra``, ``dec``."""

    name: str
    wcs: WCS = field(compare=False, repr=False)
    shape: tuple[int, int]
    ra: float
    dec: float
    ring: int | None = None
    index: int | None = None
    ra_range: tuple[float, float] | None = None
    dec_range: tuple[float, float] | None = None


class SkyTiling:
    """The rings tessellation (see the module docstring) for a tile ``size_deg`` and a pixel
    ``scale_arcsec``, with ``margin`` pixels of overlap (default: 1 % of the tile's width in
    pixels, at least 8)."""

    def __init__(self, size_deg: float, scale_arcsec: float, margin: int | None = None):
        try:
            size_deg, scale_arcsec = float(size_deg), float(scale_arcsec)
        except (TypeError, ValueError):
            raise SkystackError("tile size and pixel scale must be numbers") from None
        if not (math.isfinite(size_deg) and 0 < size_deg <= MAX_TILE_SIZE_DEG):
            raise SkystackError(f"invalid tile size {size_deg:g} deg: must be above 0 and at "
                                f"most {MAX_TILE_SIZE_DEG:g} deg")
        if not (math.isfinite(scale_arcsec) and scale_arcsec > 0):
            raise SkystackError(f"invalid pixel scale {scale_arcsec:g} arcsec: must be above 0")
        self.n_rings = max(1, round(180.0 / size_deg) - 1)
        self.height = 180.0 / (self.n_rings + 1)
        self.scale = scale_arcsec / 3600.0
        width_px = self.height / self.scale
        if width_px > MAX_TILE_PIXELS:
            raise SkystackError(f"tiles of {self.height:g} deg at {scale_arcsec:g} arcsec/px "
                                f"would be {width_px:.0f} px wide (at most {MAX_TILE_PIXELS})")
        if width_px < 8:
            raise SkystackError(f"tiles of {self.height:g} deg at {scale_arcsec:g} arcsec/px "
                                f"would be {width_px:.1f} px wide: too small")
        if margin is None:
            margin = max(8, math.ceil(0.01 * width_px))
        if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
            raise SkystackError(f"invalid tile margin {margin!r}: a number of pixels >= 0")
        self.margin = int(margin)
        # Name precision: centres are at least h apart in Dec or in RA (RA steps are >= h), so
        # names rounded to h/2 are unique.
        self.decimals = max(1, math.ceil(-math.log10(self.height / 2)))
        self._shape_of_ring = lru_cache(maxsize=None)(self._ring_shape)

    def describe(self) -> dict:
        """The tiling's parameters, for a product's summary (JSON-ready)."""
        return {"scheme": "rings", "tile_size_deg": self.height, "n_rings": self.n_rings,
                "pixel_scale_arcsec": self.scale * 3600.0, "margin_px": self.margin}

    # -- rings ---------------------------------------------------------------------------
    @property
    def north_cap(self) -> int:
        return self.n_rings + 1

    def ring_bounds(self, ring: int) -> tuple[float, float]:
        """Dec range (deg) of ``ring``'s cores: lower bound included, upper excluded (the north
        cap includes +90)."""
        h = self.height
        if ring == 0:
            return -90.0, -90.0 + h / 2
        if ring == self.north_cap:
            return 90.0 - h / 2, 90.0
        if not 1 <= ring <= self.n_rings:
            raise SkystackError(f"no ring {ring} (rings 0..{self.north_cap})")
        lo = -90.0 + h / 2 + (ring - 1) * h
        return lo, lo + h

    def tiles_in_ring(self, ring: int) -> int:
        """Number of tiles in ``ring`` (1 for a cap)."""
        if ring in (0, self.north_cap):
            return 1
        lo, hi = self.ring_bounds(ring)
        widest = 1.0 if lo <= 0.0 <= hi else max(math.cos(math.radians(lo)),
                                                  math.cos(math.radians(hi)))
        return max(1, math.ceil(360.0 * widest / self.height - 1e-9))

    def ring_of(self, dec: float) -> int:
        """The ring whose cores hold declination ``dec`` (deg)."""
        h = self.height
        if dec < -90.0 + h / 2:
            return 0
        if dec >= 90.0 - h / 2:
            return self.north_cap
        return min(self.n_rings, 1 + int(math.floor((dec - (-90.0 + h / 2)) / h)))

    # -- tiles ---------------------------------------------------------------------------
    def name(self, ra: float, dec: float) -> str:
        """DECaLS-style name of a tile centre: RA (3 integer digits) and |Dec| (2 integer
        digits) in units of 10^-decimals deg, ``p``/``m`` for the sign of Dec."""
        f = 10 ** self.decimals
        ra_units = math.floor(ra * f + 0.5) % (360 * f)  # halves up, not to even
        dec_units = math.floor(abs(dec) * f + 0.5)
        return (f"{ra_units:0{3 + self.decimals}d}{'p' if dec >= 0 else 'm'}"
                f"{dec_units:0{2 + self.decimals}d}")

    def tile(self, ring: int, index: int) -> SkyTile:
        """Tile ``index`` (taken modulo the ring's count) of ``ring``."""
        lo, hi = self.ring_bounds(ring)
        n = self.tiles_in_ring(ring)
        index = int(index) % n
        if n == 1 and ring in (0, self.north_cap):
            ra, dec = 0.0, (-90.0 if ring == 0 else 90.0)
            ra_range = (0.0, 360.0)
        else:
            step = 360.0 / n
            ra_range = (index * step, (index + 1) * step)
            ra, dec = (index + 0.5) * step, (lo + hi) / 2
        shape = self._shape_of_ring(ring)
        return SkyTile(self.name(ra, dec), self._wcs(ra, dec, shape), shape, ra, dec, ring,
                       index, ra_range, (lo, hi))

    def tile_at(self, ra: float, dec: float) -> SkyTile:
        """The tile whose core holds (``ra``, ``dec``) in degrees."""
        ring = self.ring_of(dec)
        n = self.tiles_in_ring(ring)
        return self.tile(ring, int(math.floor((ra % 360.0) / (360.0 / n))) % n)

    def candidates(self, ra_lo: float, ra_hi: float, dec_lo: float,
                   dec_hi: float) -> list[SkyTile]:
        """Tiles whose core meets the box ``ra_lo <= ra <= ra_hi`` (may run past 360 or below 0:
        taken modulo 360; a span of 360 or more is the whole circle), ``dec_lo <= dec <=
        dec_hi``."""
        out = []
        for ring in range(self.ring_of(max(-90.0, dec_lo)),
                          self.ring_of(min(90.0, dec_hi)) + 1):
            n = self.tiles_in_ring(ring)
            step = 360.0 / n
            if ra_hi - ra_lo >= 360.0 - step:
                indices = range(n)
            else:
                first = math.floor(ra_lo / step)
                indices = sorted({k % n for k in range(first, math.floor(ra_hi / step) + 1)})
            out.extend(self.tile(ring, k) for k in indices)
        return out

    def _wcs(self, ra: float, dec: float, shape: tuple[int, int]) -> WCS:
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.cunit = ["deg", "deg"]
        wcs.wcs.radesys = "ICRS"
        wcs.wcs.crval = [ra, dec]
        wcs.wcs.cdelt = [-self.scale, self.scale]
        # The tangent point at the grid's centre: pixel (n - 1) / 2, 0-based.
        wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
        wcs.wcs.set()
        wcs.pixel_shape = (shape[1], shape[0])
        return wcs

    def _ring_shape(self, ring: int) -> tuple[int, int]:
        """Pixel shape of the tiles of ``ring``: the core's projection on its own tangent
        plane, half-widths rounded up, plus ``margin`` on each side (all tiles of a ring are
        the same up to a rotation in RA)."""
        h = self.height
        if ring in (0, self.north_cap):
            # A disc of radius h/2 around the pole projects to a circle of radius tan(h/2).
            half = math.degrees(math.tan(math.radians(h / 2))) / self.scale
            side = 2 * math.ceil(half + self.margin)
            return side, side
        lo, hi = self.ring_bounds(ring)
        n = self.tiles_in_ring(ring)
        step = 360.0 / n
        ra_c, dec_c = step / 2, (lo + hi) / 2
        # The core's outline, finely sampled: its edges are curves on the tangent plane.
        t = np.linspace(0.0, 1.0, 257)
        ra = np.concatenate([t * step, t * step, np.zeros_like(t), np.full_like(t, step)])
        dec = np.concatenate([np.full_like(t, lo), np.full_like(t, hi), lo + t * h, lo + t * h])
        x, y = _gnomonic(ra, dec, ra_c, dec_c)
        half_x = float(np.max(np.abs(x))) / self.scale
        half_y = float(np.max(np.abs(y))) / self.scale
        return 2 * math.ceil(half_y + self.margin), 2 * math.ceil(half_x + self.margin)


def _gnomonic(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (deg, x towards east) of (ra, dec) on the plane tangent at
    (ra0, dec0); the textbook formulae, independent of the WCS library."""
    a, d = np.radians(np.asarray(ra) - ra0), np.radians(dec)
    d0 = math.radians(dec0)
    cos_c = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a)
    x = np.cos(d) * np.sin(a) / cos_c
    y = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a)) / cos_c
    return np.degrees(x), np.degrees(y)


def tile_from_header(header: fits.Header, *, source: str, default_name: str) -> SkyTile:
    """A user's tile from a FITS header (``NAXIS1``/``NAXIS2`` and a celestial WCS): named by
    its ``TILENAME``, else its ``EXTNAME``, else ``default_name`` (e.g. the file's stem)."""
    wcs, shape = grid_from_header(header, source=source)
    name = str(header.get("TILENAME") or header.get("EXTNAME") or default_name).strip()
    if not name:
        raise SkystackError(f"{source}: the tile has no name (TILENAME)")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        centre = wcs.pixel_to_world((shape[1] - 1) / 2, (shape[0] - 1) / 2)
        try:
            icrs = centre.transform_to(ICRS())
            ra, dec = float(icrs.ra.deg), float(icrs.dec.deg)
        except Exception:  # not an equatorial frame that astropy can convert: keep its own
            ra, dec = float("nan"), float("nan")
    return SkyTile(name, wcs, shape, ra, dec)


def _footprint_box(wcs: WCS, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """(ra_lo, ra_hi, dec_lo, dec_hi) in ICRS degrees around a frame's footprint; the RA range
    is continuous (ra_hi may exceed 360), the whole circle where the footprint holds a pole."""
    ex, ey = edge_points(shape)
    cx, cy = (shape[1] - 1) / 2, (shape[0] - 1) / 2
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sky = wcs.pixel_to_world(np.append(ex, cx), np.append(ey, cy)).transform_to(ICRS())
        ra, dec = np.asarray(sky.ra.deg), np.asarray(sky.dec.deg)
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            raise SkystackError("WCS gives no sky position for the frame's edge")
        dec_lo, dec_hi = float(dec.min()), float(dec.max())
        centre_ra = float(ra[-1])
        offsets = (ra - centre_ra + 180.0) % 360.0 - 180.0
        ra_lo, ra_hi = centre_ra + float(offsets.min()), centre_ra + float(offsets.max())
        # A footprint around a pole has edge points on every RA: the pole is inside.
        for pole in (90.0, -90.0):
            px, py = wcs.world_to_pixel(SkyCoord(0.0, pole, unit="deg", frame="icrs"))
            if np.isfinite(px) and -0.5 <= px <= shape[1] - 0.5 and -0.5 <= py <= shape[0] - 0.5:
                ra_lo, ra_hi = 0.0, 360.0
                dec_lo, dec_hi = (dec_lo, 90.0) if pole > 0 else (-90.0, dec_hi)
    return ra_lo, ra_hi, dec_lo, dec_hi


def tiles_touching(frames: Sequence[tuple[WCS, tuple[int, int]]],
                   tiles: SkyTiling | Sequence[SkyTile], *,
                   labels: Sequence[str] | None = None) -> list[list[SkyTile]]:
    """For each frame (celestial WCS, shape (rows, cols)), the tiles whose grid it can give a
    value to (:func:`skystack.regrid.grid.overlaps_grid`: the frame's projected footprint
    meets the tile's pixels, margin included), in ring/index order for a :class:`SkyTiling`
    and in the list's order for a user's list of tiles. A frame on the edge of two tiles is in
    both. ``labels`` name the frames in error messages."""
    labels = list(labels) if labels is not None else [f"frame {i}" for i in range(len(frames))]
    out: list[list[SkyTile]] = []
    for i, (wcs, shape) in enumerate(frames):
        shape = (int(shape[0]), int(shape[1]))
        if isinstance(tiles, SkyTiling):
            try:
                ra_lo, ra_hi, dec_lo, dec_hi = _footprint_box(wcs, shape)
            except SkystackError as exc:
                raise SkystackError(f"{labels[i]}: {exc}") from None
            # A tile's pixels reach past its core by its margin and, at the corners, by the
            # bulge of its rectangle around a curved core: pad the box by half a tile (the
            # footprint test below decides).
            pad = tiles.height / 2 + tiles.margin * tiles.scale
            widest = max(abs(dec_lo), abs(dec_hi)) + pad
            ra_pad = 360.0 if widest >= 89.0 else pad / math.cos(math.radians(widest))
            candidates = tiles.candidates(ra_lo - ra_pad, ra_hi + ra_pad, dec_lo - pad,
                                          dec_hi + pad)
        else:
            candidates = list(tiles)
        out.append([t for t in candidates if overlaps_grid(wcs, shape, t.wcs, t.shape)])
    return out
