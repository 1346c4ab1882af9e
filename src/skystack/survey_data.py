"""Synthetic survey night of a mosaic camera (multi-extension FITS), with its truth, for tests.

:func:`write_survey_night` writes one multi-extension FITS file per exposure of an imaginary
mosaic camera (default 2 x 3 CCDs of 96 x 128 pixels with 12-pixel gaps): biases, darks at two
exposure times, dome flats per filter and lights on a 3 x 3 grid of overlapping pointings in two
filters, some lights tile-compressed (``.fits.fz``, fpack style). It returns a
:class:`SurveyNight`: the paths by role, filter and pointing, and the noiseless truth
(:class:`SurveyTruth`) so that per-CCD masters, flux scales and sky-tile co-adds can be checked
against it; :func:`survey_truth_image` evaluates the true sky on any celestial grid.

API for tests (e.g. the night's per-CCD calibration)::

    night = write_survey_night(tmp_path, seed=1)          # ~2 s, 36 files of 6 CCDs
    night.bias, night.dark[60.0], night.flat["g"], night.light["r"]   # lists of Path
    night.light_by_pointing["g"][4]                       # the centre pointing's visits
    ccd = night.truth.ccd("CCD2")                         # CcdTruth: gain, read_noise, ...
    ccd.bias_map, ccd.dark_current, ccd.flat["g"], ccd.hot_pixels, ccd.amp_glow
    exp = night.truth.exposures[path.name]                # ExposureTruth of one file
    exp.wcs["CCD2"], exp.star_pixels["CCD2"], exp.cosmic_rays["CCD2"], exp.satellite
    survey_truth_image(night, "g", wcs, shape)            # true sky, e-/s per grid pixel

Files
-----
* ``bias_001.fits``, ``dark_030s_001.fits``, ``flat_<FILTER>_001.fits``,
  ``light_<OBJECT>_<FILTER>_p<P>_<VV>.fits`` (``P`` = pointing 1..9, ``VV`` = visit), and
  ``.fits.fz`` for the lights of the pointings in ``fz_pointings``.
* Primary HDU (no data): ``IMAGETYP``/``OBSTYPE`` (``zero``, ``dark``, ``dome flat``,
  ``object``, as DECam), ``OBJECT``, ``FILTER``, ``EXPTIME``, ``DATE-OBS``, ``MJD-OBS``,
  ``TELESCOP``, ``INSTRUME``, ``DETSIZE``, ``NEXTEND``; lights also ``TELRA``/``TELDEC``
  (pointing, deg) and ``POINTING`` (1..9).
* One image extension per CCD, ``EXTNAME = CCD1 .. CCDn`` in focal-plane order (row by row
  from the bottom, left to right), unsigned 16-bit ADU (``BZERO = 32768``), ``INHERIT = T``
  (the primary's keywords apply), ``CCDNAME`` (``R<row>C<col>``), ``CCDNUM``, ``DETSEC``
  (position in the focal plane, gaps included), ``DATASEC``/``TRIMSEC`` and ``BIASSEC`` (IRAF
  1-based inclusive ``[x1:x2,y1:y2]``), ``CCDSUM = '1 1'``, ``GAIN`` (e-/ADU) and ``RDNOISE``
  (e-), different per CCD. The overscan strip (bias level and read noise only) is on the
  side of each CCD's amplifier: the right for odd ``CCDNUM``, the left for even ones.
* In the ``.fits.fz`` files each CCD is one ``RICE_1`` tile-compressed HDU (``ZIMAGE``) of the
  same integer data (lossless); the primary HDU is as above.
* Lights carry a celestial WCS in every CCD extension: ``RA---TAN``/``DEC--TAN`` with
  ``CRVAL`` = the pointing (the optical axis) and ``CRPIX`` = the optical axis in that CCD's
  raw pixel frame (overscan included), as DECam's; the CCDs in ``sip_ccds`` add the camera's
  radial distortion as SIP (``-SIP``, order 3). The header WCS is exact: stars were painted
  where it puts them.

Conventions
-----------
* Arrays ``(y, x)``, pixel centres at integer 0-based coordinates. Truth arrays describe a
  CCD's data section (no overscan); a data pixel ``(x, y)`` is raw pixel
  ``(x + data_x0, y)``.
* Focal plane: CCD ``(row, col)`` has its data pixel ``(0, 0)`` at focal-plane pixel
  ``origin = (col * (nx + gap), row * (ny + gap))``; the optical axis is the focal plane's
  centre. x grows to the east-left of the sky as seen (``CD1_1 < 0``), y to the north.
* Raw model of a CCD, ADU::

      raw = bias_level + bias_columns[x]
            + (Poisson(response * (stars + sky * sky_scale) * t + dark_current * t)
               + satellite + cosmic_rays) / gain + Normal(0, read_noise)

  with ``stars`` (e-/s, Moffat PSF) and ``sky`` (e-/s/pixel) at response 1, ``response`` the
  CCD's absolute response (quantum efficiency x focal-plane vignetting x dust x
  pixel-to-pixel; 1 = the reference CCD's nominal), ``dark_current`` (e-/s, hot pixels and amp
  glow included) and ``read_noise`` in ADU. Flats replace the sky and stars by a lamp of
  ``flat_level`` e-/pixel; biases have ``t = 0``. No star saturates.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, Sip

from .demo_data import (
    ADU_MAX,
    AMP_GLOW,
    DARK_CURRENT,
    HOT_PIXEL_FRACTION,
    MOFFAT_BETA,
    READOUT_S,
    amp_glow_map,
    cosmic_rays,
    dust_shadows,
    moffat_stars,
    seeded_rng,
)
from .io.labels import safe_name

__all__ = ["CcdTruth", "ExposureTruth", "SurveyTruth", "SurveyNight", "write_survey_night",
           "survey_truth_image", "SURVEY_PIXEL_SCALE"]

SURVEY_PIXEL_SCALE = 1.0  # arcsec/pixel
SURVEY_FWHM_ARCSEC = 3.0  # median seeing
SURVEY_FIELD = (150.1, 2.2)  # deg, field centre (RA, Dec): the COSMOS field
SURVEY_START = datetime(2026, 4, 20, 23, 30, 0)  # UTC
TELESCOPE = "skystack synthetic 1m survey telescope"
INSTRUMENT = "skystack synthetic mosaic camera"
FLAT_EXPTIME = 2.0  # s
FLAT_LAMP_E = (25000.0, 35000.0)  # e-/pixel at response 1, range of the lamp's level
STAR_DENSITY = 1.5e-3  # stars per square arcsec
STAR_FLUX_MAX = 4000.0  # e-/s at response 1 in the reference band: no star saturates
SATELLITE_PEAK_E = 400.0  # e- at the centre of the trail
SATELLITE_SIGMA_PX = 1.0
# Sky (e-/s/pixel at response 1) and throughput relative to r for survey bands; unknown
# filters get a reproducible random value.
_SKY_E_S = {"u": 8.0, "g": 30.0, "r": 50.0, "i": 80.0, "z": 120.0, "Y": 140.0}
_THROUGHPUT = {"u": 0.3, "g": 0.85, "r": 1.0, "i": 0.9, "z": 0.6, "Y": 0.3}
_STAR_DTYPE = np.dtype([("ra", "f8"), ("dec", "f8")])
_PAINTED_DTYPE = np.dtype([("index", "i8"), ("x", "f8"), ("y", "f8")])


@dataclass(frozen=True)
class CcdTruth:
    """One CCD of the mosaic: where it sits, and its noiseless electronics and response.

    ``origin`` is the focal-plane pixel ``(x, y)`` of data pixel ``(0, 0)``; ``data_x0`` the
    raw column of data column 0 (the overscan width when the overscan is on the left).
    ``gain`` e-/ADU; ``read_noise`` and ``bias_level`` ADU (header ``RDNOISE`` is
    ``read_noise * gain`` e-); ``bias_columns`` (nx,) zero-mean ADU pattern; ``dark_current``
    (ny, nx) e-/s with hot pixels and glow; ``amp_glow`` its glow part or None;
    ``hot_pixels`` (n, 2) ``(y, x)``; ``response[filter]`` absolute response (see the module
    docstring) and ``flat[filter]`` the same normalised to median 1 on this CCD (what a per-CCD
    master flat estimates); ``qe`` this CCD's mean quantum-efficiency factor; ``sip`` whether
    its WCS has SIP distortion. Sections are IRAF strings as in the header."""

    number: int
    extname: str
    ccdname: str
    row: int
    col: int
    shape: tuple[int, int]
    origin: tuple[int, int]
    data_x0: int
    detsec: str
    datasec: str
    biassec: str
    gain: float
    read_noise: float
    bias_level: float
    bias_columns: np.ndarray
    dark_current: np.ndarray
    amp_glow: np.ndarray | None
    hot_pixels: np.ndarray
    qe: float
    response: dict[str, np.ndarray]
    flat: dict[str, np.ndarray]
    sip: bool

    @property
    def bias_map(self) -> np.ndarray:
        """Noiseless bias of the data section, ADU, float64 (ny, nx)."""
        return self.bias_level + np.broadcast_to(
            self.bias_columns.astype(np.float64)[None, :], self.shape)


@dataclass(frozen=True)
class ExposureTruth:
    """One exposure (file). ``role`` is bias/dark/flat/light; ``filter`` '' for bias/dark;
    ``pointing`` 0..8 and ``visit`` (lights, else None); ``ra``/``dec`` the pointing (deg,
    lights); ``fwhm`` seeing, arcsec (lights); ``sky_scale`` multiplier of the filter's sky;
    ``flat_level`` the lamp, e-/pixel at response 1 (flats). Per CCD EXTNAME (lights):
    ``wcs`` the header's WCS (raw pixel frame), ``star_pixels`` the stars painted (``index``
    into :attr:`SurveyTruth.stars`, data-section ``x``, ``y``), ``cosmic_rays`` (n, 2)
    ``(y, x)`` pixels hit, and ``satellite`` a boolean mask of pixels with more than 1 e- of
    the trail (only CCDs it crosses; empty for other exposures)."""

    name: str
    path: Path
    role: str
    filter: str
    exptime: float
    date_obs: datetime
    compressed: bool
    pointing: int | None = None
    visit: int | None = None
    ra: float | None = None
    dec: float | None = None
    fwhm: float | None = None
    sky_scale: float = 1.0
    flat_level: float | None = None
    wcs: dict[str, WCS] = field(default_factory=dict)
    star_pixels: dict[str, np.ndarray] = field(default_factory=dict)
    cosmic_rays: dict[str, np.ndarray] = field(default_factory=dict)
    satellite: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class SurveyTruth:
    """The noiseless night: ``ccds`` in EXTNAME order; ``stars`` (``ra``, ``dec`` deg) and
    ``star_flux[filter]`` e-/s at response 1; ``sky[filter]`` e-/s/pixel at response 1;
    ``pixel_scale`` arcsec; ``moffat_beta``; ``field`` (RA, Dec) deg of the central pointing
    before jitter; ``focal_plane`` (height, width) pixels, gaps included; ``gap`` pixels;
    ``pointings`` (RA, Dec) deg of the 9 pointings; ``exposures`` by file name; ``sip_k`` the
    radial distortion coefficient (focal-plane offset ``d`` moves by ``sip_k * d * |d|^2``);
    ``satellite_exposure`` the file name with the trail (or None)."""

    ccds: list[CcdTruth]
    stars: np.ndarray
    star_flux: dict[str, np.ndarray]
    sky: dict[str, float]
    pixel_scale: float
    moffat_beta: float
    field: tuple[float, float]
    focal_plane: tuple[int, int]
    gap: int
    pointings: list[tuple[float, float]]
    exposures: dict[str, ExposureTruth]
    sip_k: float
    satellite_exposure: str | None

    def ccd(self, extname: str) -> CcdTruth:
        """The CCD of that EXTNAME."""
        for c in self.ccds:
            if c.extname == extname:
                return c
        raise KeyError(extname)


@dataclass(frozen=True)
class SurveyNight:
    """Files written by :func:`write_survey_night` (acquisition order within each list) and the
    truth. ``dark`` by exposure time (s), ``flat`` and ``light`` by filter (lights pointing by
    pointing), ``light_by_pointing[filter][pointing]`` the visits of one pointing (0..8, row by
    row from the south-east), ``exposures`` every file in acquisition order."""

    directory: Path
    bias: list[Path]
    dark: dict[float, list[Path]]
    flat: dict[str, list[Path]]
    light: dict[str, list[Path]]
    light_by_pointing: dict[str, dict[int, list[Path]]]
    exposures: list[Path]
    truth: SurveyTruth


def _section(x0: int, x1: int, y0: int, y1: int) -> str:
    """IRAF section of 0-based half-open ranges."""
    return f"[{x0 + 1}:{x1},{y0 + 1}:{y1}]"


def _filter_value(table: dict[str, float], name: str, seed: int, lo: float, hi: float) -> float:
    if name in table:
        return table[name]
    return float(seeded_rng(seed, "survey-unknown-filter", name, str(lo)).uniform(lo, hi))


def _tan_wcs(ra: float, dec: float, crpix: tuple[float, float]) -> WCS:
    """North up, east left TAN WCS at the survey pixel scale; ``crpix`` 1-based."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = list(crpix)
    w.wcs.cd = [[-SURVEY_PIXEL_SCALE / 3600.0, 0.0], [0.0, SURVEY_PIXEL_SCALE / 3600.0]]
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    return w


def _radial_sip(k: float, crpix: tuple[float, float]) -> Sip:
    """SIP of a radial distortion ``d -> d (1 + k |d|^2)`` about CRPIX (order 3)."""
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[3, 0] = a[1, 2] = k  # u^3 + u v^2
    b[2, 1] = b[0, 3] = k  # u^2 v + v^3
    return Sip(a, b, None, None, list(crpix))


def _quantise(adu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(adu), 0, ADU_MAX).astype(np.uint16)


def write_survey_night(directory: str | os.PathLike, *, ccd_shape: tuple[int, int] = (96, 128),
                       layout: tuple[int, int] = (2, 3), gap: int = 12, overscan: int = 16,
                       n_bias: int = 5, n_dark: int = 3,
                       dark_exptimes: Sequence[float] = (30.0, 60.0), n_flat: int = 3,
                       filters: Sequence[str] = ("g", "r"), grid: tuple[int, int] = (3, 3),
                       pointing_step: float = 0.45, pointing_jitter_px: float = 2.0,
                       n_visits: int = 1, light_exptime: float = 60.0,
                       object_name: str = "SURVEY",
                       field_centre: tuple[float, float] = SURVEY_FIELD,
                       glow_ccds: Sequence[int] = (1, 5), sip_ccds: Sequence[int] = (3, 4),
                       sip_corner_px: float = 1.5, fz_pointings: Sequence[int] = (1, 3, 5, 7),
                       satellite: tuple[str, int] | None = ("", 4),
                       seed: int = 0) -> SurveyNight:
    """Write a synthetic survey night of a mosaic camera (see the module docstring).

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory; created if missing. Existing files are overwritten.
    ccd_shape : tuple of int
        ``(ny, nx)`` of each CCD's data section, pixels (at least 32 x 32).
    layout : tuple of int
        ``(rows, cols)`` of CCDs in the focal plane.
    gap : int
        Gap between neighbouring CCDs, pixels.
    overscan : int
        Overscan columns per CCD (>= 1).
    n_bias, n_dark, n_flat : int
        Biases; darks per exposure time; dome flats per filter (>= 2 for a gain check).
    dark_exptimes : sequence of float
        Dark exposure times, s.
    filters : sequence of str
        Filter names; the lights of every pointing are taken in each.
    grid : tuple of int
        ``(rows, cols)`` of pointings; pointing ``p = row * cols + col`` (0-based) is offset
        by ``((col - (cols - 1) / 2) * step_x, (row - (rows - 1) / 2) * step_y)``
        focal-plane pixels from ``field_centre`` (x to the east-left, y north), ``step`` =
        ``pointing_step`` times the focal plane's width and height, plus a jitter of up to
        ``pointing_jitter_px``.
    n_visits : int
        Lights per pointing and filter.
    light_exptime : float
        s (darks of the same exposure time exist by default).
    object_name : str
        ``OBJECT`` of every light.
    field_centre : tuple of float
        (RA, Dec) of the grid's centre, deg.
    glow_ccds, sip_ccds : sequence of int
        ``CCDNUM`` (1-based) of the CCDs with amplifier glow, and with SIP distortion.
    sip_corner_px : float
        Distortion at the focal plane's corner, pixels.
    fz_pointings : sequence of int
        Pointings (0-based) whose lights are written tile-compressed (``.fits.fz``).
    satellite : tuple of (str, int) or None
        (filter, pointing) of the one light crossed by a satellite trail (its first visit;
        filter '' = the first filter); None: no trail.
    seed : int
        Seed of the random streams; the same arguments give identical files. Streams are
        keyed by name, so e.g. ``fz_pointings`` does not change any pixel.

    Returns
    -------
    SurveyNight
    """
    ny, nx = int(ccd_shape[0]), int(ccd_shape[1])
    rows, cols = int(layout[0]), int(layout[1])
    n_ccd = rows * cols
    if ny < 32 or nx < 32:
        raise ValueError(f"ccd_shape must be at least (32, 32), got {ccd_shape}")
    if n_ccd < 1 or gap < 0 or overscan < 1:
        raise ValueError("need at least one CCD, gap >= 0 and overscan >= 1")
    filters = [filters] if isinstance(filters, str) else [str(f) for f in filters]
    if not filters or len(set(filters)) != len(filters):
        raise ValueError(f"need distinct filter names, got {filters}")
    dark_times = [float(t) for t in dark_exptimes]
    if min(n_bias, n_dark, n_flat, n_visits) < 0 or light_exptime <= 0:
        raise ValueError("frame counts must be >= 0 and exposure times > 0")
    shape = (ny, nx)
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)

    # --- focal plane --------------------------------------------------------------------------
    width, height = cols * nx + (cols - 1) * gap, rows * ny + (rows - 1) * gap
    axis_x, axis_y = (width - 1) / 2.0, (height - 1) / 2.0  # optical axis, 0-based fp pixels
    sip_k = sip_corner_px / math.hypot(axis_x, axis_y) ** 3
    fp_vignetting_depth = 0.08  # response falls by 8 % from the axis to the corner, squared

    ccds: list[CcdTruth] = []
    for k in range(n_ccd):
        number, row, col = k + 1, k // cols, k % cols
        rng = seeded_rng(seed, "survey-ccd", number, ny, nx)
        gain = float(rng.uniform(1.2, 2.6))
        read_noise = float(rng.uniform(2.5, 6.0))
        bias_level = float(rng.uniform(800.0, 1600.0))
        cols_pattern = rng.normal(0.0, 0.8, nx)
        bias_columns = (cols_pattern - cols_pattern.mean()).astype(np.float32)
        qe = float(rng.uniform(0.9, 1.1))
        left = number % 2 == 0
        dark = DARK_CURRENT * rng.lognormal(0.0, 0.15, shape)
        n_hot = max(3, round(HOT_PIXEL_FRACTION * ny * nx))
        hot_flat = np.sort(rng.choice(ny * nx, size=n_hot, replace=False))
        dark.flat[hot_flat] = DARK_CURRENT * np.exp(rng.uniform(np.log(10), np.log(100), n_hot))
        glow = None
        if number in glow_ccds:
            glow = amp_glow_map(shape, corner=(ny - 1, 0 if left else nx - 1),
                                peak=AMP_GLOW).astype(np.float32)
            dark += glow
        prnu = 1.0 + rng.normal(0.0, 0.005, shape)
        x0, y0 = col * (nx + gap), row * (ny + gap)
        fy = np.arange(ny)[:, None] + y0 - axis_y
        fx = np.arange(nx)[None, :] + x0 - axis_x
        vignetting = 1.0 - fp_vignetting_depth * (fx**2 + fy**2) / (axis_x**2 + axis_y**2)
        response: dict[str, np.ndarray] = {}
        flat: dict[str, np.ndarray] = {}
        for f in filters:
            frng = seeded_rng(seed, "survey-ccd-filter", number, f, ny, nx)
            dust = dust_shadows(shape, frng, max(1, round(3 * ny * nx / 256**2)), (20, 40),
                                (0.02, 0.04))
            resp = qe * (1.0 + frng.normal(0.0, 0.02)) * vignetting * dust * prnu
            response[f] = resp.astype(np.float32)
            flat[f] = (resp / np.median(resp)).astype(np.float32)
        data_x0 = overscan if left else 0
        over = (0, overscan) if left else (nx, nx + overscan)
        ccds.append(CcdTruth(
            number=number, extname=f"CCD{number}", ccdname=f"R{row + 1}C{col + 1}", row=row,
            col=col, shape=shape, origin=(x0, y0), data_x0=data_x0,
            detsec=_section(x0, x0 + nx, y0, y0 + ny),
            datasec=_section(data_x0, data_x0 + nx, 0, ny),
            biassec=_section(over[0], over[1], 0, ny), gain=gain, read_noise=read_noise,
            bias_level=bias_level, bias_columns=bias_columns,
            dark_current=dark.astype(np.float32), amp_glow=glow,
            hot_pixels=np.stack(np.unravel_index(hot_flat, shape), axis=1).astype(np.int64),
            qe=qe, response=response, flat=flat, sip=number in sip_ccds))

    # --- sky: pointings and stars -------------------------------------------------------------
    grows, gcols = int(grid[0]), int(grid[1])
    # Pixel (0, 0) of this grid is the field centre.
    field_wcs = _tan_wcs(float(field_centre[0]), float(field_centre[1]), (1.0, 1.0))
    step_x, step_y = pointing_step * width, pointing_step * height
    jitter = seeded_rng(seed, "survey-pointing-jitter").uniform(
        -pointing_jitter_px, pointing_jitter_px, (grows * gcols, 2))
    offsets = [((c - (gcols - 1) / 2) * step_x + jitter[r * gcols + c, 0],
                (r - (grows - 1) / 2) * step_y + jitter[r * gcols + c, 1])
               for r in range(grows) for c in range(gcols)]
    pointings = [tuple(float(v) for v in field_wcs.wcs_pix2world([[ox, oy]], 0)[0])
                 for ox, oy in offsets]
    margin = 20.0
    half_w = (gcols - 1) / 2 * step_x + width / 2 + pointing_jitter_px + margin
    half_h = (grows - 1) / 2 * step_y + height / 2 + pointing_jitter_px + margin
    rng = seeded_rng(seed, "survey-stars")
    n_stars = max(20, round(STAR_DENSITY * 4 * half_w * half_h * SURVEY_PIXEL_SCALE**2))
    sx = rng.uniform(-half_w, half_w, n_stars)
    sy = rng.uniform(-half_h, half_h, n_stars)
    stars = np.zeros(n_stars, dtype=_STAR_DTYPE)
    stars["ra"], stars["dec"] = field_wcs.wcs_pix2world(sx, sy, 0)
    ref_flux = np.minimum(15.0 * rng.random(n_stars) ** (-1 / 0.7), STAR_FLUX_MAX)
    colour = rng.normal(0.0, 0.15, n_stars)
    star_flux = {f: ref_flux * _filter_value(_THROUGHPUT, f, seed, 0.3, 1.0)
                 * 10 ** (-0.4 * colour * (1 if i % 2 else -1)) for i, f in enumerate(filters)}
    sky = {f: _filter_value(_SKY_E_S, f, seed, 20.0, 80.0) for f in filters}

    def ccd_wcs(ccd: CcdTruth, ra: float, dec: float) -> WCS:
        crpix = (axis_x - ccd.origin[0] + ccd.data_x0 + 1.0, axis_y - ccd.origin[1] + 1.0)
        w = _tan_wcs(ra, dec, crpix)
        if ccd.sip:
            w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
            w.sip = _radial_sip(sip_k, crpix)
        return w

    # --- exposures ----------------------------------------------------------------------------
    clock = SURVEY_START
    exposures: dict[str, ExposureTruth] = {}
    order: list[Path] = []

    def primary_header(imagetyp: str, exptime: float, start: datetime, filt: str) -> fits.Header:
        hdr = fits.Header()
        hdr["IMAGETYP"] = (imagetyp, "Type of observation")
        hdr["OBSTYPE"] = (imagetyp, "Type of observation")
        hdr["EXPTIME"] = (float(exptime), "[s] Exposure time")
        hdr["DATE-OBS"] = (start.isoformat(timespec="milliseconds"), "[UTC] Start of exposure")
        hdr["MJD-OBS"] = (round(float(Time(start, scale="utc").mjd), 8),
                          "[d] MJD of start of exposure")
        if filt:
            hdr["FILTER"] = (filt, "Filter")
        hdr["TELESCOP"] = (TELESCOPE, "Telescope")
        hdr["INSTRUME"] = (INSTRUMENT, "Camera")
        hdr["DETSIZE"] = (_section(0, width, 0, height), "Focal plane, gaps included")
        hdr["NEXTEND"] = (n_ccd, "Number of CCD extensions")
        return hdr

    def ccd_header(ccd: CcdTruth) -> fits.Header:
        hdr = fits.Header()
        hdr["INHERIT"] = (True, "Primary header keywords apply")
        hdr["CCDNAME"] = (ccd.ccdname, "CCD name (row, column in the focal plane)")
        hdr["CCDNUM"] = (ccd.number, "CCD number")
        hdr["DETSEC"] = (ccd.detsec, "Position in the focal plane")
        hdr["DATASEC"] = (ccd.datasec, "Data section")
        hdr["TRIMSEC"] = (ccd.datasec, "Section to keep after trimming")
        hdr["BIASSEC"] = (ccd.biassec, "Overscan section")
        hdr["CCDSUM"] = ("1 1", "Binning in x and y")
        hdr["GAIN"] = (round(ccd.gain, 6), "[e-/ADU] Gain")
        hdr["RDNOISE"] = (round(ccd.read_noise * ccd.gain, 6), "[e-] Read noise")
        hdr["BUNIT"] = ("adu", "Pixel unit")
        return hdr

    def read_out(ccd: CcdTruth, electrons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raw = np.empty((ny, nx + overscan))
        data = slice(ccd.data_x0, ccd.data_x0 + nx)
        raw[:, data] = (ccd.bias_map + electrons / ccd.gain
                        + rng.normal(0.0, ccd.read_noise, shape))
        over = np.ones(raw.shape[1], bool)
        over[data] = False
        raw[:, over] = ccd.bias_level + rng.normal(0.0, ccd.read_noise, (ny, overscan))
        return _quantise(raw)

    def write(name: str, primary: fits.Header, images: list[tuple[CcdTruth, np.ndarray,
                                                                   fits.Header]],
              compressed: bool) -> Path:
        path = out_dir / name
        hdus: list[Any] = [fits.PrimaryHDU(header=primary)]
        for ccd, data, hdr in images:
            if compressed:
                hdus.append(fits.CompImageHDU(data=data, header=hdr, name=ccd.extname,
                                              compression_type="RICE_1"))
            else:
                hdus.append(fits.ImageHDU(data=data, header=hdr, name=ccd.extname))
        fits.HDUList(hdus).writeto(path, overwrite=True)
        order.append(path)
        return path

    def start(exptime: float) -> datetime:
        nonlocal clock
        begin = clock
        clock = clock + timedelta(seconds=exptime + READOUT_S)
        return begin

    def calibration(role: str, imagetyp: str, name: str, exptime: float, filt: str,
                    key: tuple[str | int, ...], lamp: float | None) -> Path:
        t0 = start(exptime)
        images = []
        for ccd in ccds:
            rng = seeded_rng(seed, "survey-frame", *key, ccd.number)
            lam = ccd.dark_current.astype(np.float64) * exptime
            if lamp is not None:
                lam = lam + lamp * ccd.response[filt]
            electrons = rng.poisson(lam).astype(np.float64) if exptime > 0 else np.zeros(shape)
            images.append((ccd, read_out(ccd, electrons, rng), ccd_header(ccd)))
        path = write(name, primary_header(imagetyp, exptime, t0, filt), images, False)
        exposures[name] = ExposureTruth(name=name, path=path, role=role, filter=filt,
                                        exptime=exptime, date_obs=t0, compressed=False,
                                        flat_level=lamp)
        return path

    bias = [calibration("bias", "zero", f"bias_{i + 1:03d}.fits", 0.0, "", ("bias", i), None)
            for i in range(n_bias)]
    dark: dict[float, list[Path]] = {}
    for t in dark_times:
        tag = f"{int(t):03d}s" if t.is_integer() else f"{t:g}s".replace(".", "p")
        dark[t] = [calibration("dark", "dark", f"dark_{tag}_{i + 1:03d}.fits", t, "",
                               ("dark", repr(t), i), None) for i in range(n_dark)]
    flat: dict[str, list[Path]] = {}
    for f in filters:
        clock += timedelta(seconds=60.0)
        lamps = seeded_rng(seed, "survey-flat-lamp", f).uniform(*FLAT_LAMP_E, n_flat)
        flat[f] = [calibration("flat", "dome flat", f"flat_{safe_name(f)}_{i + 1:03d}.fits",
                               FLAT_EXPTIME, f, ("flat", f, i), float(lamps[i]))
                   for i in range(n_flat)]

    sat_filter = None
    if satellite is not None:
        sat_filter = satellite[0] or filters[0]
    satellite_exposure: str | None = None
    light: dict[str, list[Path]] = {f: [] for f in filters}
    by_pointing: dict[str, dict[int, list[Path]]] = {f: {} for f in filters}
    fp_y = np.arange(ny)[:, None].astype(np.float64)
    fp_x = np.arange(nx)[None, :].astype(np.float64)
    for f in filters:
        clock += timedelta(seconds=60.0)
        for p, (ra, dec) in enumerate(pointings):
            by_pointing[f][p] = []
            for v in range(n_visits):
                clock += timedelta(seconds=30.0)  # slew
                setup = seeded_rng(seed, "survey-light-setup", f, p, v)
                fwhm = float(np.clip(SURVEY_FWHM_ARCSEC * math.exp(setup.normal(0.0, 0.08)),
                                     2.4, 3.8))
                sky_scale = float(1.0 + setup.normal(0.0, 0.02))
                trail = satellite is not None and f == sat_filter and p == satellite[1] \
                    and v == 0
                if trail:
                    # A straight line across the focal plane (fp pixels): point and angle.
                    t_x, t_y = setup.uniform(0.3, 0.7) * width, setup.uniform(0.3, 0.7) * height
                    t_angle = setup.uniform(0.15, 0.45)  # rad from the x axis
                compressed = p in fz_pointings
                name = (f"light_{safe_name(object_name)}_{safe_name(f)}_p{p + 1}_{v + 1:02d}"
                        + (".fits.fz" if compressed else ".fits"))
                t0 = start(light_exptime)
                truth = ExposureTruth(name=name, path=out_dir / name, role="light", filter=f,
                                      exptime=light_exptime, date_obs=t0,
                                      compressed=compressed, pointing=p, visit=v, ra=ra,
                                      dec=dec, fwhm=fwhm, sky_scale=sky_scale)
                images = []
                for ccd in ccds:
                    rng = seeded_rng(seed, "survey-light", f, p, v, ccd.number)
                    w = ccd_wcs(ccd, ra, dec)
                    px, py = w.all_world2pix(stars["ra"], stars["dec"], 0)
                    px = px - ccd.data_x0
                    reach = 8 * fwhm / SURVEY_PIXEL_SCALE
                    on = np.flatnonzero((px > -reach) & (px < nx - 1 + reach)
                                        & (py > -reach) & (py < ny - 1 + reach))
                    painted = np.zeros(on.size, dtype=_PAINTED_DTYPE)
                    painted["index"], painted["x"], painted["y"] = on, px[on], py[on]
                    star_e = moffat_stars(shape, px[on], py[on],
                                          star_flux[f][on] * light_exptime,
                                          fwhm / SURVEY_PIXEL_SCALE)
                    lam = (ccd.response[f] * (star_e + sky[f] * sky_scale * light_exptime)
                           + ccd.dark_current.astype(np.float64) * light_exptime)
                    electrons = rng.poisson(lam).astype(np.float64)
                    cy, cx, cr_adu = cosmic_rays(shape, rng)
                    np.add.at(electrons, (cy, cx), cr_adu * ccd.gain)
                    if trail:
                        d = np.abs((fp_x + ccd.origin[0] - t_x) * math.sin(t_angle)
                                   - (fp_y + ccd.origin[1] - t_y) * math.cos(t_angle))
                        streak = SATELLITE_PEAK_E * np.exp(-0.5 * (d / SATELLITE_SIGMA_PX) ** 2)
                        if streak.max() > 1.0:
                            electrons += streak
                            truth.satellite[ccd.extname] = streak > 1.0
                    hdr = ccd_header(ccd)
                    wcs_header = w.to_header(relax=True)
                    wcs_header.remove("MJDREF", ignore_missing=True)
                    wcs_header.remove("DATE-OBS", ignore_missing=True)
                    wcs_header.remove("MJD-OBS", ignore_missing=True)
                    hdr.update(wcs_header)
                    images.append((ccd, read_out(ccd, electrons, rng), hdr))
                    truth.wcs[ccd.extname] = w
                    truth.star_pixels[ccd.extname] = painted
                    truth.cosmic_rays[ccd.extname] = np.stack([cy, cx], axis=1)
                prim = primary_header("object", light_exptime, t0, f)
                prim["OBJECT"] = (object_name, "Field")
                prim["TELRA"] = (round(ra, 8), "[deg] Pointing RA")
                prim["TELDEC"] = (round(dec, 8), "[deg] Pointing Dec")
                prim["POINTING"] = (p + 1, "Pointing of the survey pattern")
                path = write(name, prim, images, compressed)
                exposures[name] = truth
                if trail:
                    satellite_exposure = name
                light[f].append(path)
                by_pointing[f][p].append(path)

    truth = SurveyTruth(
        ccds=ccds, stars=stars, star_flux=star_flux, sky=sky, pixel_scale=SURVEY_PIXEL_SCALE,
        moffat_beta=MOFFAT_BETA, field=(float(field_centre[0]), float(field_centre[1])),
        focal_plane=(height, width), gap=gap, pointings=pointings, exposures=exposures,
        sip_k=sip_k, satellite_exposure=satellite_exposure)
    return SurveyNight(directory=out_dir, bias=bias, dark=dark, flat=flat, light=light,
                       light_by_pointing=by_pointing, exposures=order, truth=truth)


def survey_truth_image(night: SurveyNight, filter_name: str, wcs: WCS, shape: tuple[int, int],
                       exposures: Sequence[str] | None = None) -> np.ndarray:
    """Noiseless sky (stars + sky background) on any celestial grid, e-/s per grid pixel.

    What perfectly calibrated lights (in electrons, flat-fielded to response 1, divided by the
    exposure time), resampled flux-conserving onto ``(wcs, shape)`` and averaged, would give:
    the mean over ``exposures`` (file names; default every light of that filter) of the stars
    rendered with each exposure's seeing plus the filter's sky times the exposure's
    ``sky_scale``. The grid may have any pixel scale (stars keep their total flux; the sky per
    pixel scales with the pixel area) and orientation; pixels outside an exposure's footprint
    still count, so compare where every exposure covers the grid.
    """
    t = night.truth
    names = [p.name for p in night.light[filter_name]] if exposures is None else list(exposures)
    if not names:
        raise ValueError(f"no lights in {filter_name}")
    celestial = wcs.celestial
    scale = float(np.abs(np.linalg.det(celestial.pixel_scale_matrix)) ** 0.5 * 3600.0)
    px, py = celestial.all_world2pix(t.stars["ra"], t.stars["dec"], 0)
    flux = t.star_flux[filter_name]
    out = np.zeros(tuple(shape))
    for name in names:
        exp = t.exposures[name]
        out += moffat_stars(tuple(shape), np.asarray(px), np.asarray(py), flux,
                            exp.fwhm / scale, beta=t.moffat_beta)
        out += t.sky[filter_name] * exp.sky_scale * (scale / t.pixel_scale) ** 2
    return out / len(names)
