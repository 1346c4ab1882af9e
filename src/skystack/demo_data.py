"""Synthetic but realistic night of raw CCD frames, for the quick start and for tests.

:func:`write_sample_night` writes bias, dark, flat and light frames of an imaginary
cooled CCD camera to FITS files the way a camera control program (MaxIm DL style
headers) would, and returns the noiseless truth used to make them, so that a
calibration / alignment / stacking pipeline can be checked against it.

Conventions
-----------
* Arrays are indexed ``(y, x)``; pixel centres are at integer 0-based coordinates.
* Frames are simulated in electrons, converted to ADU with the gain, quantised,
  clipped to ``[0, 65535]`` and stored as unsigned 16-bit integers (``BITPIX = 16``,
  ``BZERO = 32768``, ``BSCALE = 1``).
* Header ``GAIN`` is in e-/ADU and header ``RDNOISE`` in electrons (the IRAF / ccdproc
  convention); ``truth["read_noise"]`` is in ADU.

The image model of one raw frame, in ADU, is::

    raw = bias_level + bias_columns[x]
          + Poisson(flat * (sky * gain + stars) * t + dark_current * t) / gain
          + cosmic_rays + Normal(0, read_noise)

with ``sky`` in ADU/s, ``stars`` and ``dark_current`` (amplifier glow included) in e-/s and
``t`` the exposure time in seconds. Flats replace ``sky * gain + stars`` by a uniform
illumination; biases have ``t = 0``.

Geometry of the light frames: a star at ``p = (x, y)`` on the grid of the first light
frame of its target is at ``R(theta) (p - c) + c + (dx, dy)`` in light frame ``i``, with
``c = ((nx - 1) / 2, (ny - 1) / 2)`` the frame centre, ``(dy, dx)`` the frame's dither and
``R(theta) = [[cos, -sin], [sin, cos]]`` a counter-clockwise rotation (x right, y up) by the
frame's rotation angle. Each frame's WCS says the same: ``CRPIX = c + 1 + (dx, dy)`` and
``PC = R(-theta)`` (written only for frames with ``theta != 0``).

With ``overscan > 0`` every frame has that many extra columns on the right of the data
section, holding the bias level and read noise only (no column pattern, no signal), and
the header keywords ``BIASSEC`` (overscan), ``TRIMSEC`` and ``DATASEC`` (data section) in
IRAF's 1-based, inclusive ``[x1:x2,y1:y2]`` notation. The truth arrays describe the data
section only.

A survey night of a mosaic camera (multi-extension FITS, one extension per CCD) is written by
:mod:`skystack.survey_data`, which builds on the pieces here.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .io.labels import safe_name

__all__ = ["SampleNight", "truth_image", "write_sample_night", "moffat_stars", "cosmic_rays",
           "seeded_rng", "dust_shadows", "amp_glow_map"]

# Camera: a typical cooled full-frame CCD behind a ~1.9 m focal length telescope.
BIAS_LEVEL = 1000.0  # ADU
READ_NOISE = 5.0  # ADU
GAIN = 1.5  # e-/ADU
DARK_CURRENT = 0.1  # e-/s/pixel at CCD_TEMP
HOT_PIXEL_FRACTION = 1e-3
# Amplifier glow: dark signal growing with exposure time like the dark current, brightest in
# the corner of the last row and first column (next to the output amplifier) and falling off
# exponentially with the distance from it, over a tenth of the chip or so.
AMP_GLOW = 40.0 * DARK_CURRENT  # e-/s in the corner pixel
AMP_GLOW_SCALE = 0.08  # e-folding distance, as a fraction of the shorter side
CCD_TEMP = -10.0  # deg C
PIXEL_SIZE_UM = 9.0
PIXEL_SCALE = 1.0  # arcsec/pixel
FOCAL_LENGTH_MM = PIXEL_SIZE_UM * 1e-3 * 206264.806 / PIXEL_SCALE
READOUT_S = 5.0  # dead time between the end of one exposure and the start of the next
ADU_MAX = 65535
INSTRUMENT = "skystack synthetic camera"
TELESCOPE = "skystack synthetic 250mm f/7.4"

# Night and field.
NIGHT_START = datetime(2026, 3, 14, 20, 0, 0)
_MJD_ZERO = datetime(1858, 11, 17)
FIELD_RA = 132.825  # deg, M67
FIELD_DEC = 11.8  # deg
# Further targets of a night (``objects=``) lie on a line from M67 towards the south-east.
FIELD_STEP_DEG = (0.3, -0.2)  # (RA on the sky, Dec) per target, deg

# Optics / atmosphere.
FWHM = 3.0  # pixels, median seeing
MOFFAT_BETA = 3.5
FLAT_EXPTIME = 2.0  # s
FLAT_LEVEL_RANGE = (20000.0, 28000.0)  # ADU above bias at the median of the flat

# Per-filter sky brightness (ADU/s at flat = 1) and stellar throughput relative to V; the
# colour slope turns a star's colour index into a filter-dependent brightness change.
_SKY_ADU_S = {"U": 0.3, "B": 0.8, "V": 1.5, "G": 1.5, "R": 2.0, "I": 3.0,
              "L": 4.0, "C": 4.0, "CLEAR": 4.0, "HA": 0.15, "OIII": 0.12, "SII": 0.1}
_THROUGHPUT = {"U": 0.2, "B": 0.7, "V": 1.0, "G": 1.1, "R": 1.0, "I": 0.6,
               "L": 2.5, "C": 2.7, "CLEAR": 2.7, "HA": 0.05, "OIII": 0.03, "SII": 0.03}
_COLOUR_SLOPE = {"U": 1.5, "B": 1.0, "V": 0.0, "G": 0.3, "R": -0.5, "I": -1.0,
                 "L": -0.2, "C": -0.2, "CLEAR": -0.2, "HA": -0.6, "OIII": 0.5, "SII": -0.7}

_STAR_DTYPE = np.dtype([("x", "f8"), ("y", "f8"), ("flux", "f8"), ("ra", "f8"), ("dec", "f8")])


@dataclass(frozen=True)
class SampleNight:
    """Files written by :func:`write_sample_night` and the truth used to make them.

    Attributes
    ----------
    directory : Path
        Directory holding the FITS files.
    bias, dark : list of Path
        Bias and dark frames, in acquisition order (darks of every exposure time).
    flat, light : dict of str to list of Path
        Flat-field and light frames by filter name, in acquisition order (lights of every
        target, target after target).
    dark_by_exptime : dict of float to list of Path
        Dark frames by exposure time, s.
    light_by_object : dict of str to dict of str to list of Path
        Light frames by target (``OBJECT``) and filter.
    truth : dict
        Noiseless ingredients of the simulation. Arrays describe the data section (without
        overscan columns), indexed ``(y, x)``.

        ``bias_level`` : float
            Mean bias level, ADU (also the level of the overscan columns).
        ``bias_columns`` : ndarray, float32, shape (nx,)
            Zero-mean fixed column pattern added to ``bias_level``, ADU.
        ``read_noise`` : float
            Read noise, ADU (the header ``RDNOISE`` is in electrons).
        ``gain`` : float
            e-/ADU.
        ``dark_current`` : ndarray, float32, shape (ny, nx)
            Dark current, e-/s/pixel, hot pixels and amplifier glow included.
        ``amp_glow`` : ndarray, float32, shape (ny, nx)
            The amplifier glow part of ``dark_current``, e-/s/pixel: ``AMP_GLOW`` (4 e-/s,
            40x the typical dark current) in the corner pixel ``(ny - 1, 0)``, falling off as
            ``exp(-r / (AMP_GLOW_SCALE * min(ny, nx)))`` with the distance ``r`` (pixels) from
            it. Like the dark current it grows linearly with exposure time.
        ``hot_pixels`` : ndarray, int, shape (n, 2)
            ``(y, x)`` positions of the hot pixels (10-100x the typical dark current).
        ``dark_exptimes`` : tuple of float
            Exposure times of the darks, s, in acquisition order.
        ``flat`` : dict of str to ndarray, float32
            Pixel response per filter (vignetting x dust x pixel-to-pixel), median 1.
        ``vignetting`` : dict of str to ndarray, float32
            Vignetting alone per filter, 1 on the optical axis (not median-normalised).
        ``flat_level`` : dict of str to ndarray
            Illumination of each flat frame, ADU at ``flat == 1``, i.e. the median
            of the bias- and dark-subtracted flat frame.
        ``flat_exptime`` : float
            Exposure time of the flats, s.
        ``sky`` : dict of str to float
            Nominal sky background per filter, ADU/s at ``flat == 1``.
        ``stars``, ``star_flux``, ``fwhm``, ``sky_scale``, ``dither``, ``rotation``, ``wcs``
            Those of the first target, as in ``objects[first target]`` below.
        ``objects`` : dict of str to dict
            Per target (``OBJECT`` value), in acquisition order:

            ``ra``, ``dec`` : float
                Field centre, deg (the first target is M67, RA 132.825, Dec 11.8).
            ``wcs`` : astropy.wcs.WCS
                Celestial WCS of the grid of the target's first light frame (no dither, no
                rotation): the truth grid of ``stars``.
            ``stars`` : structured ndarray
                Fields ``x``, ``y`` (pixels on the truth grid, may lie slightly outside it),
                ``flux`` (e-/s in the first filter, before the flat), ``ra``, ``dec`` (deg).
            ``star_flux`` : dict of str to ndarray
                Star fluxes per filter, e-/s.
            ``light_exptime`` : float
                Exposure time of the target's lights, s.
            ``fwhm`` : dict of str to ndarray
                Seeing FWHM of each light frame, pixels.
            ``sky_scale`` : dict of str to ndarray
                Per light frame multiplier of ``sky`` (the sky drifts by a few % in the night).
            ``dither`` : dict of str to ndarray, shape (n, 2)
                ``(dy, dx)`` of each light frame, pixels (see the module docstring).
            ``rotation`` : dict of str to ndarray, shape (n,)
                Rotation ``theta`` of each light frame about the frame centre, deg,
                counter-clockwise (see the module docstring).
        ``lights`` : dict of str to dict
            Per light frame file name: ``object``, ``filter``, ``index`` (0-based, within
            the target and filter), ``exptime`` (s), ``dither`` (``(dy, dx)``), ``rotation``
            (deg), ``fwhm`` (pixels), ``sky_scale``, ``wcs`` (the frame's WCS, as in its
            header), ``dark_exptime`` (the light's exposure time if darks of that exposure
            exist, else None) and ``dark_scaled`` (True when no dark matches the exposure,
            so that a master dark must be scaled by exposure time).
        ``cosmic_rays`` : dict of str to ndarray, int, shape (n, 2)
            ``(y, x)`` pixels hit by cosmic rays, by light frame file name.
        ``pixel_scale`` : float
            arcsec/pixel.
        ``overscan`` : int
            Number of overscan columns (0: none).
        ``datasec``, ``biassec`` : str or None
            The ``DATASEC`` (= ``TRIMSEC``) and ``BIASSEC`` header values; None without
            overscan.
    """

    directory: Path
    bias: list[Path]
    dark: list[Path]
    flat: dict[str, list[Path]]
    light: dict[str, list[Path]]
    truth: dict[str, Any]
    dark_by_exptime: dict[float, list[Path]] = field(default_factory=dict)
    light_by_object: dict[str, dict[str, list[Path]]] = field(default_factory=dict)


def seeded_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Independent random stream for one named ingredient.

    Keying the streams by name keeps e.g. the bias frames identical when the number
    of lights or the list of filters changes.
    """
    spawn_key = tuple(k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))


def _filter_value(table: dict[str, float], name: str, seed: int, lo: float, hi: float) -> float:
    """Look up a per-filter constant; unknown filters get a reproducible random value."""
    key = re.sub(r"[^A-Z0-9]", "", name.upper())
    if key in table:
        return table[key]
    return float(seeded_rng(seed, "unknown-filter", name, str(lo)).uniform(lo, hi))


def _exptime_tag(exptime: float) -> str:
    if float(exptime).is_integer():
        return f"{int(exptime):03d}s"
    return f"{exptime:g}s".replace(".", "p")


def dust_shadows(shape: tuple[int, int], rng: np.random.Generator, n: int,
                 radius: tuple[float, float], depth: tuple[float, float]) -> np.ndarray:
    """Multiplicative shadows of ``n`` out-of-focus dust grains: annuli with a shallower centre.

    The central obstruction of the telescope is what makes the shadow a donut. ``radius`` is the
    range of outer radii, pixels at a 512-pixel frame (scaled with the shorter side), ``depth``
    the range of fractional depths. Returns the transmission (1 = no shadow), float64.
    """
    ny, nx = shape
    scale = min(shape) / 512.0
    out = np.ones(shape)
    for _ in range(n):
        r_out = rng.uniform(*radius) * scale
        r_in = r_out * rng.uniform(0.35, 0.5)
        edge = max(0.8, 0.08 * r_out)
        cy, cx = rng.uniform(0, ny - 1), rng.uniform(0, nx - 1)
        d = rng.uniform(*depth)
        # Only the bounding box is evaluated: the shadow is negligible outside it.
        half = r_out + 6 * edge
        y0, y1 = max(0, int(cy - half)), min(ny, int(cy + half) + 2)
        x0, x1 = max(0, int(cx - half)), min(nx, int(cx + half) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1)[:, None] - cy
        xx = np.arange(x0, x1)[None, :] - cx
        r = np.hypot(yy, xx)
        outer = 0.5 * (1.0 + np.tanh((r_out - r) / edge))
        inner = 0.5 * (1.0 + np.tanh((r_in - r) / edge))
        out[y0:y1, x0:x1] *= 1.0 - d * (outer - 0.7 * inner)
    return out


def _vignetting(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Smooth radial falloff, 1 on the (slightly decentred) optical axis, ~13-15% in corners."""
    ny, nx = shape
    cy = (ny - 1) / 2 + rng.normal(0, 0.02 * ny)
    cx = (nx - 1) / 2 + rng.normal(0, 0.02 * nx)
    r_corner2 = ((ny - 1) / 2) ** 2 + ((nx - 1) / 2) ** 2
    r2 = ((np.arange(ny)[:, None] - cy) ** 2 + (np.arange(nx)[None, :] - cx) ** 2) / r_corner2
    depth = rng.uniform(0.13, 0.15)
    # Mostly quadratic with a quartic tail, as a cos^4 law plus mechanical vignetting.
    return 1.0 - depth * (0.7 * r2 + 0.3 * r2 * r2)


def amp_glow_map(shape: tuple[int, int], corner: tuple[int, int] | None = None,
                 peak: float = AMP_GLOW, scale: float = AMP_GLOW_SCALE) -> np.ndarray:
    """Amplifier glow, e-/s/pixel: ``peak`` in the ``corner`` pixel ``(y, x)`` next to the output
    amplifier (default ``(ny - 1, 0)``), falling off as ``exp(-r / (scale * min(ny, nx)))``
    with the distance ``r`` (pixels) from it. float64."""
    ny, nx = shape
    cy, cx = (ny - 1, 0) if corner is None else corner
    yy, xx = np.ogrid[:ny, :nx]
    return peak * np.exp(-np.hypot(yy - cy, xx - cx) / (scale * min(shape)))


def moffat_stars(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, counts: np.ndarray,
                  fwhm: float, beta: float = MOFFAT_BETA, oversample: int = 3) -> np.ndarray:
    """Render Moffat stars into an image, integrating each pixel by oversampling.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    x, y : ndarray
        Star centres, pixels (0-based, pixel centres at integers).
    counts : ndarray
        Total electrons per star.
    fwhm : float
        PSF FWHM, pixels.
    beta : float
        Moffat exponent.
    oversample : int
        Sub-samples per pixel and axis.

    Returns
    -------
    ndarray, float64
        Electrons per pixel.
    """
    ny, nx = shape
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    norm = (beta - 1.0) / (math.pi * alpha**2)
    image = np.zeros(ny * nx)
    # Stamps grow with brightness so that the truncated wing stays below ~0.5 e-,
    # otherwise bright stars would show square edges.
    h0 = math.ceil(4 * fwhm)
    halves = np.array([h0, 2 * h0, 4 * h0, 8 * h0])
    edge = norm * (1.0 + (halves / alpha) ** 2) ** (-beta)
    group = np.searchsorted(-edge, -0.5 / np.maximum(counts, 1e-9))
    group = np.minimum(group, len(halves) - 1)
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    for g, h in enumerate(halves):
        sel = np.flatnonzero((group == g)
                             & (x > -h - 1) & (x < nx + h) & (y > -h - 1) & (y < ny + h))
        if sel.size == 0:
            continue
        k = np.arange(-h, h + 1)
        grid = (k[:, None] + sub[None, :]).ravel()
        side = k.size
        chunk = max(1, 4_000_000 // (side * oversample) ** 2)
        for start in range(0, sel.size, chunk):
            idx = sel[start:start + chunk]
            ix = np.rint(x[idx]).astype(np.int64)
            iy = np.rint(y[idx]).astype(np.int64)
            dx = grid[None, :] + (ix - x[idx])[:, None]
            dy = grid[None, :] + (iy - y[idx])[:, None]
            r2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2
            val = (1.0 + r2 / alpha**2) ** (-beta)
            val = val.reshape(idx.size, side, oversample, side, oversample).mean(axis=(2, 4))
            val *= (norm * counts[idx])[:, None, None]
            py = iy[:, None] + k[None, :]
            px = ix[:, None] + k[None, :]
            ok = ((py >= 0) & (py < ny))[:, :, None] & ((px >= 0) & (px < nx))[:, None, :]
            flat_idx = py[:, :, None] * nx + px[:, None, :]
            image += np.bincount(flat_idx[ok], weights=val[ok], minlength=ny * nx)
    return image.reshape(shape)


def cosmic_rays(shape: tuple[int, int], rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-3 cosmic-ray hits: single pixels, small blobs or short straight tracks.

    Returns
    -------
    ys, xs : ndarray of int
        Pixels hit (unique).
    adu : ndarray
        Deposited signal per pixel, ADU.
    """
    ny, nx = shape
    ys: list[np.ndarray] = []
    xs: list[np.ndarray] = []
    adu: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 4))):
        y0, x0 = rng.uniform(0, ny - 1), rng.uniform(0, nx - 1)
        kind = rng.random()
        if kind < 0.4:
            py, px = np.array([round(y0)]), np.array([round(x0)])
            e = rng.uniform(2000, 9000, 1)
        elif kind < 0.6:
            py = round(y0) + np.array([0, 0, 1, 1])
            px = round(x0) + np.array([0, 1, 0, 1])
            e = rng.uniform(800, 6000, 4)
        else:
            length = rng.uniform(4, 25)
            angle = rng.uniform(0, np.pi)
            t = np.arange(0.0, length, 0.5)
            pts = np.unique(np.stack([np.rint(y0 + t * np.sin(angle)),
                                      np.rint(x0 + t * np.cos(angle))], axis=1), axis=0)
            py, px = pts[:, 0].astype(np.int64), pts[:, 1].astype(np.int64)
            e = rng.uniform(1500, 6000, py.size)
        ok = (py >= 0) & (py < ny) & (px >= 0) & (px < nx)
        ys.append(py[ok].astype(np.int64))
        xs.append(px[ok].astype(np.int64))
        adu.append(e[ok])
    return np.concatenate(ys), np.concatenate(xs), np.concatenate(adu)


def _base_header(imagetyp: str, exptime: float, date_obs: datetime) -> fits.Header:
    hdr = fits.Header()
    hdr["IMAGETYP"] = (imagetyp, "Type of image")
    hdr["EXPTIME"] = (float(exptime), "[s] Exposure time")
    hdr["EXPOSURE"] = (float(exptime), "[s] Exposure time")
    hdr["DATE-OBS"] = (date_obs.isoformat(timespec="milliseconds"),
                       "[UTC] Start of exposure")
    # Without MJD-OBS astropy.wcs warns on every light frame that it derived one.
    mjd = (date_obs - _MJD_ZERO).total_seconds() / 86400.0
    hdr["MJD-OBS"] = (round(mjd, 8), "[d] Modified Julian Date of start of exposure")
    hdr["INSTRUME"] = (INSTRUMENT, "Camera")
    hdr["TELESCOP"] = (TELESCOPE, "Telescope")
    hdr["GAIN"] = (GAIN, "[e-/ADU] Electronic gain")
    hdr["RDNOISE"] = (READ_NOISE * GAIN, "[e-] Read noise")
    hdr["CCD-TEMP"] = (CCD_TEMP, "[C] CCD temperature")
    hdr["SET-TEMP"] = (CCD_TEMP, "[C] CCD temperature set point")
    hdr["XBINNING"] = (1, "Binning factor in x")
    hdr["YBINNING"] = (1, "Binning factor in y")
    hdr["XPIXSZ"] = (PIXEL_SIZE_UM, "[um] Pixel width including binning")
    hdr["YPIXSZ"] = (PIXEL_SIZE_UM, "[um] Pixel height including binning")
    hdr["FOCALLEN"] = (round(FOCAL_LENGTH_MM, 1), "[mm] Focal length")
    hdr["BUNIT"] = ("adu", "Pixel unit")
    return hdr


def _write(path: Path, adu: np.ndarray, header: fits.Header) -> None:
    """Quantise, clip and write as unsigned 16-bit (astropy sets BZERO = 32768)."""
    data = np.clip(np.rint(adu), 0, ADU_MAX).astype(np.uint16)
    fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)


def _reference_wcs(shape: tuple[int, int], ra: float = FIELD_RA,
                   dec: float = FIELD_DEC) -> WCS:
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [ra, dec]
    # FITS pixels are 1-based: the 0-based centre (n - 1) / 2 is (n + 1) / 2.
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    # North up, east left, as seen on the sky.
    w.wcs.cdelt = [-PIXEL_SCALE / 3600.0, PIXEL_SCALE / 3600.0]
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    return w


def _frame_wcs(ref_wcs: WCS, dy: float, dx: float, theta_deg: float) -> WCS:
    """WCS of a light frame dithered by ``(dy, dx)`` and rotated by ``theta_deg`` about the
    frame centre (which is the reference CRPIX)."""
    w = ref_wcs.deepcopy()
    w.wcs.crpix = [w.wcs.crpix[0] + dx, w.wcs.crpix[1] + dy]
    if theta_deg != 0.0:
        t = math.radians(theta_deg)
        # Pixel offsets from CRPIX are R(theta) times those on the reference grid, so the
        # frame's PC matrix is R(-theta) (the reference has PC = identity).
        w.wcs.pc = [[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]
    return w


def _frame_positions(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], dy: float,
                     dx: float, theta_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions in a dithered and rotated light frame of points ``(x, y)`` of the truth grid."""
    if theta_deg == 0.0:
        # Exactly the arithmetic of unrotated frames (keeps those files bit-identical).
        return x + dx, y + dy
    ny, nx = shape
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    return (cx + c * (x - cx) - s * (y - cy) + dx, cy + s * (x - cx) + c * (y - cy) + dy)


def _field_centre(k: int) -> tuple[float, float]:
    """(RA, Dec) of the k-th target of the night, deg; the first is M67."""
    dec = FIELD_DEC + FIELD_STEP_DEG[1] * k
    ra = FIELD_RA + FIELD_STEP_DEG[0] * k / math.cos(math.radians(dec))
    return ra, dec


def write_sample_night(directory: str | os.PathLike, *, shape: tuple[int, int] = (512, 512),
                       n_bias: int = 9, n_dark: int = 5, dark_exptime: float = 60.0,
                       n_flat: int = 5, filters: Sequence[str] = ("V",), n_light: int = 9,
                       light_exptime: float | Mapping[str, float] = 60.0,
                       object_name: str = "M67", dither_px: float = 0.0, seed: int = 0,
                       dark_exptimes: Sequence[float] | None = None,
                       objects: Sequence[str] | None = None, rotation_deg: float = 0.0,
                       overscan: int = 0) -> SampleNight:
    """Write a synthetic night of raw CCD frames as FITS files.

    Frames are taken in the order biases, darks (per exposure time), flats (per
    filter), lights (per target, then per filter), starting at 2026-03-14T20:00:00 UTC,
    each exposure starting ``EXPTIME`` plus 5 s of readout after the previous one (plus a
    minute for filter changes and two for each slew to a target).

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory; created if missing. Existing files are overwritten.
    shape : tuple of int
        ``(ny, nx)`` of every frame's data section, pixels.
    n_bias : int
        Number of bias frames (``bias_001.fits`` ...).
    n_dark : int
        Number of dark frames per exposure time (``dark_060s_001.fits`` ...).
    dark_exptime : float
        Dark exposure time, s (ignored when ``dark_exptimes`` is given).
    n_flat : int
        Number of flats per filter (``flat_V_001.fits`` ...), exposed 2 s each at
        20000-28000 ADU (varying lamp).
    filters : sequence of str
        Filter names, e.g. ``("B", "V", "R")``.
    n_light : int
        Number of light frames per target and filter (``light_M67_V_001.fits`` ...).
    light_exptime : float or mapping of str to float
        Light exposure time, s; a mapping gives it per target (every target needed). It
        need not be one of the dark exposure times: such lights need a scaled dark.
    object_name : str
        ``OBJECT`` keyword of the single target (ignored when ``objects`` is given); the
        field is around M67 (RA 132.825, Dec 11.8 deg).
    dither_px : float
        Maximum random offset of each light frame along each axis, pixels
        (uniform in ``[-dither_px, dither_px]``). The first light frame of each target
        is its reference (offset 0); with 0 all lights of a target are exactly aligned.
    seed : int
        Seed of the random streams; the same arguments give identical files.
    dark_exptimes : sequence of float, optional
        Several dark exposure times, s, e.g. ``(30.0, 60.0)``: ``n_dark`` darks of each.
    objects : sequence of str, optional
        Several targets (``OBJECT`` values), each with its own star field: the first
        around M67, the next ones 0.3 deg further east and 0.2 deg further south each.
    rotation_deg : float
        Maximum absolute rotation of each light frame about the frame centre, deg
        (uniform in ``[-rotation_deg, rotation_deg]``; the first light frame of each target
        is not rotated). Stars and WCS (``PC`` matrix) rotate together.
    overscan : int
        Number of overscan columns appended on the right of every frame (0: none), with
        ``BIASSEC``, ``TRIMSEC`` and ``DATASEC`` header keywords.

    Returns
    -------
    SampleNight
        Paths of the files written and the noiseless truth (see :class:`SampleNight`).
    """
    ny, nx = (int(shape[0]), int(shape[1]))
    if ny < 16 or nx < 16:
        raise ValueError(f"shape must be at least (16, 16), got {shape}")
    if min(n_bias, n_dark, n_flat, n_light) < 0:
        raise ValueError("frame counts must be >= 0")
    dark_times = [float(dark_exptime)] if dark_exptimes is None else [
        float(t) for t in dark_exptimes]
    if len(set(dark_times)) != len(dark_times):
        raise ValueError(f"duplicate dark exposure times in {dark_times}")
    # A bare string is one target name, not a sequence of one-letter targets.
    if objects is None:
        targets = [object_name]
    else:
        targets = [objects] if isinstance(objects, str) else [str(o) for o in objects]
    if not targets or len({safe_name(o) for o in targets}) != len(targets):
        raise ValueError(f"need distinct target names (as file names), got {targets}")
    if isinstance(light_exptime, Mapping):
        missing = [o for o in targets if o not in light_exptime]
        if missing:
            raise ValueError(f"light_exptime has no exposure time for {missing}")
        light_times = {o: float(light_exptime[o]) for o in targets}
    else:
        light_times = {o: float(light_exptime) for o in targets}
    if min(dark_times, default=1.0) <= 0 or min(light_times.values()) <= 0:
        raise ValueError("exposure times must be > 0")
    if dither_px < 0:
        raise ValueError("dither_px must be >= 0")
    if not 0 <= rotation_deg <= 45:
        raise ValueError("rotation_deg must be in [0, 45]")
    overscan = int(overscan)
    if overscan < 0:
        raise ValueError("overscan must be >= 0")
    # A bare string is one filter name, not a sequence of one-letter filters.
    filters = [filters] if isinstance(filters, str) else [str(f) for f in filters]
    if len(set(filters)) != len(filters):
        raise ValueError(f"duplicate filter names in {filters}")
    if (n_flat or n_light) and not filters:
        raise ValueError("flats and lights need at least one filter")
    shape = (ny, nx)
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    if overscan:
        datasec: str | None = f"[1:{nx},1:{ny}]"
        biassec: str | None = f"[{nx + 1}:{nx + overscan},1:{ny}]"
    else:
        datasec = biassec = None

    # --- sensor: fixed for a given seed and shape -------------------------------------------
    rng = seeded_rng(seed, "bias-pattern", ny, nx)
    cols = 1.5 * np.sin(2 * np.pi * np.arange(nx) / rng.uniform(20, 60) + rng.uniform(0, 6.3))
    cols += rng.normal(0.0, 1.0, nx)
    bias_columns = (cols - cols.mean()).astype(np.float32)
    bias_map = BIAS_LEVEL + bias_columns[None, :].astype(np.float64)

    rng = seeded_rng(seed, "dark", ny, nx)
    # Pixel-to-pixel dark non-uniformity and hot pixels, plus the amplifier glow of one corner.
    dark = DARK_CURRENT * rng.lognormal(0.0, 0.15, shape)
    n_hot = max(1, round(HOT_PIXEL_FRACTION * ny * nx))
    hot_flat = np.sort(rng.choice(ny * nx, size=n_hot, replace=False))
    dark.flat[hot_flat] = DARK_CURRENT * np.exp(rng.uniform(np.log(10), np.log(100), n_hot))
    glow = amp_glow_map(shape)
    amp_glow = glow.astype(np.float32)
    dark += glow
    dark_current = dark.astype(np.float32)
    dark64 = dark_current.astype(np.float64)
    hot_pixels = np.stack(np.unravel_index(hot_flat, shape), axis=1).astype(np.int64)

    rng = seeded_rng(seed, "prnu", ny, nx)
    prnu = 1.0 + rng.normal(0.0, 0.005, shape)
    n_dust = max(1, round(3 * ny * nx / 512**2))
    window_dust = dust_shadows(shape, seeded_rng(seed, "window-dust", ny, nx), n_dust, (8, 16),
                        (0.02, 0.04))

    # --- optics per filter ------------------------------------------------------------------
    flat_truth: dict[str, np.ndarray] = {}
    vignetting: dict[str, np.ndarray] = {}
    sky: dict[str, float] = {}
    for f in filters:
        vig = _vignetting(shape, seeded_rng(seed, "vignetting", f, ny, nx))
        filter_dust = dust_shadows(shape, seeded_rng(seed, "filter-dust", f, ny, nx),
                            max(1, round(2 * ny * nx / 512**2)), (20, 45), (0.015, 0.03))
        resp = vig * window_dust * filter_dust * prnu
        flat_truth[f] = (resp / np.median(resp)).astype(np.float32)
        vignetting[f] = vig.astype(np.float32)
        sky[f] = _filter_value(_SKY_ADU_S, f, seed, 0.5, 3.0)

    # --- star fields, one per target --------------------------------------------------------
    margin = dither_px + 10.0
    if rotation_deg > 0:
        # A rotated frame reaches beyond the truth grid by up to 2 sin(theta / 2) times the
        # half diagonal, and a rotated dither by up to sqrt(2) dither_px.
        half_diag = 0.5 * math.hypot(ny - 1, nx - 1)
        margin = (math.sqrt(2.0) * dither_px + 10.0
                  + 2.0 * half_diag * math.sin(math.radians(rotation_deg) / 2.0))
    fields: dict[str, dict[str, Any]] = {}
    for k, target in enumerate(targets):
        # The first target keeps the stream of single-target nights.
        rng = (seeded_rng(seed, "stars", ny, nx) if k == 0
               else seeded_rng(seed, "stars", target, ny, nx))
        n_stars = max(10, round(150 * (ny + 2 * margin) * (nx + 2 * margin) / 512**2))
        star_x = rng.uniform(-margin, nx - 1 + margin, n_stars)
        star_y = rng.uniform(-margin, ny - 1 + margin, n_stars)
        # Pareto N(>F) ~ F^-0.7: many faint stars, a handful bright enough to saturate.
        ref_flux = np.minimum(20.0 * rng.random(n_stars) ** (-1 / 0.7), 3e5)
        colour = rng.normal(0.6, 0.3, n_stars)
        star_flux = {}
        for f in filters:
            thr = _filter_value(_THROUGHPUT, f, seed, 0.3, 1.5)
            slope = _filter_value(_COLOUR_SLOPE, f, seed, -1.0, 1.0)
            star_flux[f] = ref_flux * thr * 10 ** (-0.4 * slope * (colour - 0.6))
        field_ra, field_dec = _field_centre(k)
        ref_wcs = _reference_wcs(shape, field_ra, field_dec)
        ra, dec = ref_wcs.wcs_pix2world(star_x, star_y, 0)
        stars = np.zeros(n_stars, dtype=_STAR_DTYPE)
        stars["x"], stars["y"], stars["ra"], stars["dec"] = star_x, star_y, ra, dec
        stars["flux"] = star_flux[filters[0]] if filters else ref_flux
        fields[target] = {"ra": field_ra, "dec": field_dec, "wcs": ref_wcs, "stars": stars,
                          "star_flux": star_flux, "light_exptime": light_times[target],
                          "fwhm": {}, "sky_scale": {}, "dither": {}, "rotation": {}}

    # --- frames -----------------------------------------------------------------------------
    clock = NIGHT_START

    def next_time(exptime: float) -> datetime:
        nonlocal clock
        start = clock
        clock = clock + timedelta(seconds=exptime + READOUT_S)
        return start

    def read_out(electrons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        adu = bias_map + electrons / GAIN + rng.normal(0.0, READ_NOISE, shape)
        if not overscan:
            return adu
        # Drawn after the data section: the data are the same with or without overscan.
        full = np.empty((ny, nx + overscan))
        full[:, :nx] = adu
        full[:, nx:] = BIAS_LEVEL + rng.normal(0.0, READ_NOISE, (ny, overscan))
        return full

    def header(imagetyp: str, exptime: float) -> fits.Header:
        hdr = _base_header(imagetyp, exptime, next_time(exptime))
        if overscan:
            hdr["BIASSEC"] = (biassec, "Overscan section (1-based, inclusive)")
            hdr["TRIMSEC"] = (datasec, "Section to keep after trimming")
            hdr["DATASEC"] = (datasec, "Data section")
        return hdr

    bias_paths = []
    for i in range(n_bias):
        rng = seeded_rng(seed, "bias-frame", i)
        hdr = header("Bias Frame", 0.0)
        path = out_dir / f"bias_{i + 1:03d}.fits"
        _write(path, read_out(np.zeros(shape), rng), hdr)
        bias_paths.append(path)

    dark_paths = []
    dark_by_exptime: dict[float, list[Path]] = {}
    for k, t_dark in enumerate(dark_times):
        dark_by_exptime[t_dark] = []
        for i in range(n_dark):
            # The first exposure time keeps the stream of single-exposure nights.
            rng = seeded_rng(seed, "dark-frame", i) if k == 0 else \
                seeded_rng(seed, "dark-frame", repr(t_dark), i)
            hdr = header("Dark Frame", t_dark)
            path = out_dir / f"dark_{_exptime_tag(t_dark)}_{i + 1:03d}.fits"
            _write(path, read_out(rng.poisson(dark64 * t_dark).astype(np.float64), rng), hdr)
            dark_paths.append(path)
            dark_by_exptime[t_dark].append(path)

    flat_paths: dict[str, list[Path]] = {}
    flat_level: dict[str, np.ndarray] = {}
    for f in filters:
        clock += timedelta(seconds=60.0)
        rng = seeded_rng(seed, "flat-frame", f)
        levels = rng.uniform(*FLAT_LEVEL_RANGE, n_flat)
        flat_level[f] = levels
        flat_paths[f] = []
        for i in range(n_flat):
            hdr = header("Flat Field", FLAT_EXPTIME)
            hdr["FILTER"] = (f, "Filter")
            lam = levels[i] * GAIN * flat_truth[f] + dark64 * FLAT_EXPTIME
            path = out_dir / f"flat_{safe_name(f)}_{i + 1:03d}.fits"
            _write(path, read_out(rng.poisson(lam).astype(np.float64), rng), hdr)
            flat_paths[f].append(path)

    light_paths: dict[str, list[Path]] = {f: [] for f in filters}
    light_by_object: dict[str, dict[str, list[Path]]] = {}
    lights: dict[str, dict[str, Any]] = {}
    cosmic: dict[str, np.ndarray] = {}
    for k, target in enumerate(targets):
        clock += timedelta(seconds=120.0)
        fld = fields[target]
        t_light = fld["light_exptime"]
        ref_wcs = fld["wcs"]
        star_x, star_y = fld["stars"]["x"], fld["stars"]["y"]
        tag = safe_name(target)
        # Stream keys of the first target are those of single-target nights.
        key: tuple[str, ...] = () if k == 0 else (target,)
        light_by_object[target] = {}
        for fi, f in enumerate(filters):
            if fi:
                clock += timedelta(seconds=60.0)
            rng = seeded_rng(seed, "light-setup", *key, f)
            fwhm = np.clip(FWHM * np.exp(rng.normal(0.0, 0.08, n_light)), 2.2, 4.2)
            sky_scale = 1.0 + rng.normal(0.0, 0.02, n_light)
            offsets = rng.uniform(-dither_px, dither_px, (n_light, 2)) if dither_px > 0 \
                else np.zeros((n_light, 2))
            rotation = seeded_rng(seed, "light-rotation", target, f).uniform(
                -rotation_deg, rotation_deg, n_light) if rotation_deg > 0 else np.zeros(n_light)
            if fi == 0 and n_light:
                offsets[0] = 0.0  # the first light frame defines the truth grid
                rotation[0] = 0.0
            fld["fwhm"][f], fld["sky_scale"][f] = fwhm, sky_scale
            fld["dither"][f], fld["rotation"][f] = offsets, rotation
            light_by_object[target][f] = []
            for i in range(n_light):
                rng = seeded_rng(seed, "light-frame", *key, f, i)
                dy, dx = offsets[i]
                hdr = header("Light Frame", t_light)
                hdr["FILTER"] = (f, "Filter")
                hdr["OBJECT"] = (target, "Target")
                w = _frame_wcs(ref_wcs, dy, dx, float(rotation[i]))
                wcs_header = w.to_header()
                # astropy adds a time reference that means nothing for a still image.
                wcs_header.remove("MJDREF", ignore_missing=True)
                hdr.update(wcs_header)
                px, py = _frame_positions(star_x, star_y, shape, dy, dx, float(rotation[i]))
                star_e = moffat_stars(shape, px, py, fld["star_flux"][f] * t_light, fwhm[i])
                sky_e = sky[f] * sky_scale[i] * GAIN * t_light
                lam = (star_e + sky_e) * flat_truth[f] + dark64 * t_light
                electrons = rng.poisson(lam).astype(np.float64)
                cy, cx, cr_adu = cosmic_rays(shape, rng)
                np.add.at(electrons, (cy, cx), cr_adu * GAIN)
                path = out_dir / f"light_{tag}_{safe_name(f)}_{i + 1:03d}.fits"
                _write(path, read_out(electrons, rng), hdr)
                light_paths[f].append(path)
                light_by_object[target][f].append(path)
                cosmic[path.name] = np.stack([cy, cx], axis=1)
                matched = t_light in dark_times
                lights[path.name] = {
                    "object": target, "filter": f, "index": i, "exptime": t_light,
                    "dither": offsets[i].copy(), "rotation": float(rotation[i]),
                    "fwhm": float(fwhm[i]), "sky_scale": float(sky_scale[i]), "wcs": w,
                    "dark_exptime": t_light if matched else None, "dark_scaled": not matched,
                }

    first = fields[targets[0]]
    truth: dict[str, Any] = {
        "bias_level": BIAS_LEVEL,
        "bias_columns": bias_columns,
        "read_noise": READ_NOISE,
        "gain": GAIN,
        "dark_current": dark_current,
        "amp_glow": amp_glow,
        "hot_pixels": hot_pixels,
        "dark_exptimes": tuple(dark_times),
        "flat": flat_truth,
        "vignetting": vignetting,
        "flat_level": flat_level,
        "flat_exptime": FLAT_EXPTIME,
        "sky": sky,
        "sky_scale": first["sky_scale"],
        "stars": first["stars"],
        "star_flux": first["star_flux"],
        "fwhm": first["fwhm"],
        "moffat_beta": MOFFAT_BETA,
        "dither": first["dither"],
        "rotation": first["rotation"],
        "cosmic_rays": cosmic,
        "wcs": first["wcs"],
        "pixel_scale": PIXEL_SCALE,
        "objects": fields,
        "lights": lights,
        "overscan": overscan,
        "datasec": datasec,
        "biassec": biassec,
    }
    return SampleNight(directory=out_dir, bias=bias_paths, dark=dark_paths, flat=flat_paths,
                       light=light_paths, truth=truth, dark_by_exptime=dark_by_exptime,
                       light_by_object=light_by_object)


def truth_image(night: SampleNight, object_name: str, filter_name: str, wcs: WCS,
                shape: tuple[int, int], frames: Sequence[str] | None = None) -> np.ndarray:
    """Noiseless mean of calibrated light frames of one target and filter, on any grid.

    What a perfect calibration (bias and dark removed, divided by the median-1 flat) of
    each light frame, a perfect resampling onto the grid ``(wcs, shape)`` and a plain mean
    would give: sky plus stars (each frame's own sky level and seeing), ADU per light
    exposure. Pixels outside a frame's footprint still count, so compare only where every
    frame covers the grid.

    Parameters
    ----------
    night : SampleNight
        The night, as returned by :func:`write_sample_night`.
    object_name, filter_name : str
        Target (``OBJECT``) and filter.
    wcs : astropy.wcs.WCS
        Celestial WCS of the grid; its pixel scale must be the night's (1 arcsec/pixel), at
        any rotation and offset.
    shape : tuple of int
        ``(ny, nx)`` of the grid.
    frames : sequence of str, optional
        File names of the light frames to average (default: all of that target and filter).

    Returns
    -------
    ndarray, float64, shape ``shape``
        ADU.
    """
    t = night.truth
    fld = t["objects"][object_name]
    scales = np.abs(np.linalg.det(wcs.celestial.pixel_scale_matrix)) ** 0.5 * 3600.0
    if not math.isclose(float(scales), t["pixel_scale"], rel_tol=1e-3):
        raise ValueError(f"grid pixel scale {float(scales):.4g} arcsec differs from the "
                         f"night's {t['pixel_scale']} arcsec")
    names = [p.name for p in night.light_by_object[object_name][filter_name]] \
        if frames is None else list(frames)
    if not names:
        raise ValueError(f"no light frames of {object_name} in {filter_name}")
    px, py = wcs.celestial.world_to_pixel_values(fld["stars"]["ra"], fld["stars"]["dec"])
    counts = fld["star_flux"][filter_name] * fld["light_exptime"]
    out = np.zeros(tuple(shape))
    for name in names:
        frame = t["lights"][name]
        out += moffat_stars(tuple(shape), np.asarray(px), np.asarray(py), counts,
                             frame["fwhm"]) / GAIN
        out += t["sky"][filter_name] * frame["sky_scale"] * frame["exptime"]
    return out / len(names)


# Public names of the dithered-frame geometry, for the resampling benchmark
# (skystack.bench.dithered) that builds frames the same way.
reference_wcs = _reference_wcs
frame_wcs = _frame_wcs
frame_positions = _frame_positions
