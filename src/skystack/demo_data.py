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

with ``sky`` in ADU/s, ``stars`` and ``dark_current`` in e-/s and ``t`` the
exposure time in seconds. Flats replace ``sky * gain + stars`` by a uniform
illumination; biases have ``t = 0``.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["SampleNight", "write_sample_night"]

# Camera: a typical cooled full-frame CCD behind a ~1.9 m focal length telescope.
BIAS_LEVEL = 1000.0  # ADU
READ_NOISE = 5.0  # ADU
GAIN = 1.5  # e-/ADU
DARK_CURRENT = 0.1  # e-/s/pixel at CCD_TEMP
HOT_PIXEL_FRACTION = 1e-3
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
        Bias and dark frames, in acquisition order.
    flat, light : dict of str to list of Path
        Flat-field and light frames by filter name, in acquisition order.
    truth : dict
        Noiseless ingredients of the simulation:

        ``bias_level`` : float
            Mean bias level, ADU.
        ``bias_columns`` : ndarray, float32, shape (nx,)
            Zero-mean fixed column pattern added to ``bias_level``, ADU.
        ``read_noise`` : float
            Read noise, ADU (the header ``RDNOISE`` is in electrons).
        ``gain`` : float
            e-/ADU.
        ``dark_current`` : ndarray, float32, shape (ny, nx)
            Dark current, e-/s/pixel, hot pixels included.
        ``hot_pixels`` : ndarray, int, shape (n, 2)
            ``(y, x)`` positions of the hot pixels.
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
        ``sky_scale`` : dict of str to ndarray
            Per light frame multiplier of ``sky`` (the sky drifts by a few % in the night).
        ``stars`` : structured ndarray
            Fields ``x``, ``y`` (pixels on the grid of the first light frame, may lie
            slightly outside it), ``flux`` (e-/s in the first filter, before the flat),
            ``ra``, ``dec`` (deg).
        ``star_flux`` : dict of str to ndarray
            Star fluxes per filter, e-/s.
        ``fwhm`` : dict of str to ndarray
            Seeing FWHM of each light frame, pixels.
        ``moffat_beta`` : float
            Moffat PSF exponent.
        ``dither`` : dict of str to ndarray, shape (n, 2)
            ``(dy, dx)`` of each light frame: a star at ``(y, x)`` in the first light
            frame is at ``(y + dy, x + dx)`` in this one.
        ``cosmic_rays`` : dict of str to ndarray, int, shape (n, 2)
            ``(y, x)`` pixels hit by cosmic rays, by light frame file name.
        ``wcs`` : astropy.wcs.WCS
            Celestial WCS of the first light frame grid.
        ``pixel_scale`` : float
            arcsec/pixel.
    """

    directory: Path
    bias: list[Path]
    dark: list[Path]
    flat: dict[str, list[Path]]
    light: dict[str, list[Path]]
    truth: dict[str, Any]


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
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
    return float(_rng(seed, "unknown-filter", name, str(lo)).uniform(lo, hi))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+-]+", "_", text).strip("_") or "x"


def _exptime_tag(exptime: float) -> str:
    if float(exptime).is_integer():
        return f"{int(exptime):03d}s"
    return f"{exptime:g}s".replace(".", "p")


def _dust(shape: tuple[int, int], rng: np.random.Generator, n: int,
          radius: tuple[float, float], depth: tuple[float, float]) -> np.ndarray:
    """Multiplicative shadows of out-of-focus dust: annuli with a shallower centre.

    The central obstruction of the telescope is what makes the shadow a donut.
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


def _moffat_stars(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, counts: np.ndarray,
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


def _cosmic_rays(shape: tuple[int, int], rng: np.random.Generator
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


def _reference_wcs(shape: tuple[int, int]) -> WCS:
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [FIELD_RA, FIELD_DEC]
    # FITS pixels are 1-based: the 0-based centre (n - 1) / 2 is (n + 1) / 2.
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    # North up, east left, as seen on the sky.
    w.wcs.cdelt = [-PIXEL_SCALE / 3600.0, PIXEL_SCALE / 3600.0]
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    return w


def write_sample_night(directory: str | os.PathLike, *, shape: tuple[int, int] = (512, 512),
                       n_bias: int = 9, n_dark: int = 5, dark_exptime: float = 60.0,
                       n_flat: int = 5, filters: Sequence[str] = ("V",), n_light: int = 9,
                       light_exptime: float = 60.0, object_name: str = "M67",
                       dither_px: float = 0.0, seed: int = 0) -> SampleNight:
    """Write a synthetic night of raw CCD frames as FITS files.

    Frames are taken in the order biases, darks, flats (per filter), lights (per
    filter), starting at 2026-03-14T20:00:00 UTC, each exposure starting ``EXPTIME``
    plus 5 s of readout after the previous one (plus a minute for filter changes
    and two for the slew to the target).

    Parameters
    ----------
    directory : str or os.PathLike
        Output directory; created if missing. Existing files are overwritten.
    shape : tuple of int
        ``(ny, nx)`` of every frame, pixels.
    n_bias : int
        Number of bias frames (``bias_001.fits`` ...).
    n_dark : int
        Number of dark frames (``dark_060s_001.fits`` ...).
    dark_exptime : float
        Dark exposure time, s.
    n_flat : int
        Number of flats per filter (``flat_V_001.fits`` ...), exposed 2 s each at
        20000-28000 ADU (varying lamp).
    filters : sequence of str
        Filter names, e.g. ``("B", "V", "R")``.
    n_light : int
        Number of light frames per filter (``light_M67_V_001.fits`` ...).
    light_exptime : float
        Light exposure time, s.
    object_name : str
        ``OBJECT`` keyword; the field is always around M67 (RA 132.825, Dec 11.8 deg).
    dither_px : float
        Maximum random offset of each light frame along each axis, pixels
        (uniform in ``[-dither_px, dither_px]``). The first light frame is the
        reference (offset 0); with 0 all lights are exactly aligned.
    seed : int
        Seed of the random streams; the same arguments give identical files.

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
    if dark_exptime <= 0 or light_exptime <= 0:
        raise ValueError("exposure times must be > 0")
    if dither_px < 0:
        raise ValueError("dither_px must be >= 0")
    # A bare string is one filter name, not a sequence of one-letter filters.
    filters = [filters] if isinstance(filters, str) else [str(f) for f in filters]
    if len(set(filters)) != len(filters):
        raise ValueError(f"duplicate filter names in {filters}")
    if (n_flat or n_light) and not filters:
        raise ValueError("flats and lights need at least one filter")
    shape = (ny, nx)
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)

    # --- sensor: fixed for a given seed and shape -------------------------------------------
    rng = _rng(seed, "bias-pattern", ny, nx)
    cols = 1.5 * np.sin(2 * np.pi * np.arange(nx) / rng.uniform(20, 60) + rng.uniform(0, 6.3))
    cols += rng.normal(0.0, 1.0, nx)
    bias_columns = (cols - cols.mean()).astype(np.float32)
    bias_map = BIAS_LEVEL + bias_columns[None, :].astype(np.float64)

    rng = _rng(seed, "dark", ny, nx)
    # Pixel-to-pixel dark non-uniformity plus a faint amplifier glow from one corner.
    dark = DARK_CURRENT * rng.lognormal(0.0, 0.15, shape)
    yy, xx = np.ogrid[:ny, :nx]
    dark += 0.5 * DARK_CURRENT * np.exp(-np.hypot(yy - (ny - 1), xx) / (0.08 * min(shape)))
    n_hot = max(1, round(HOT_PIXEL_FRACTION * ny * nx))
    hot_flat = np.sort(rng.choice(ny * nx, size=n_hot, replace=False))
    dark.flat[hot_flat] = DARK_CURRENT * np.exp(rng.uniform(np.log(10), np.log(100), n_hot))
    dark_current = dark.astype(np.float32)
    dark64 = dark_current.astype(np.float64)
    hot_pixels = np.stack(np.unravel_index(hot_flat, shape), axis=1).astype(np.int64)

    rng = _rng(seed, "prnu", ny, nx)
    prnu = 1.0 + rng.normal(0.0, 0.005, shape)
    n_dust = max(1, round(3 * ny * nx / 512**2))
    window_dust = _dust(shape, _rng(seed, "window-dust", ny, nx), n_dust, (8, 16), (0.02, 0.04))

    # --- optics per filter ------------------------------------------------------------------
    flat_truth: dict[str, np.ndarray] = {}
    vignetting: dict[str, np.ndarray] = {}
    sky: dict[str, float] = {}
    for f in filters:
        vig = _vignetting(shape, _rng(seed, "vignetting", f, ny, nx))
        filter_dust = _dust(shape, _rng(seed, "filter-dust", f, ny, nx),
                            max(1, round(2 * ny * nx / 512**2)), (20, 45), (0.015, 0.03))
        resp = vig * window_dust * filter_dust * prnu
        flat_truth[f] = (resp / np.median(resp)).astype(np.float32)
        vignetting[f] = vig.astype(np.float32)
        sky[f] = _filter_value(_SKY_ADU_S, f, seed, 0.5, 3.0)

    # --- star field -------------------------------------------------------------------------
    rng = _rng(seed, "stars", ny, nx)
    margin = dither_px + 10.0
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
    ref_wcs = _reference_wcs(shape)
    ra, dec = ref_wcs.wcs_pix2world(star_x, star_y, 0)
    stars = np.zeros(n_stars, dtype=_STAR_DTYPE)
    stars["x"], stars["y"], stars["ra"], stars["dec"] = star_x, star_y, ra, dec
    stars["flux"] = star_flux[filters[0]] if filters else ref_flux

    # --- frames -----------------------------------------------------------------------------
    clock = NIGHT_START

    def next_time(exptime: float) -> datetime:
        nonlocal clock
        start = clock
        clock = clock + timedelta(seconds=exptime + READOUT_S)
        return start

    def read_out(electrons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return bias_map + electrons / GAIN + rng.normal(0.0, READ_NOISE, shape)

    bias_paths = []
    for i in range(n_bias):
        rng = _rng(seed, "bias-frame", i)
        hdr = _base_header("Bias Frame", 0.0, next_time(0.0))
        path = out_dir / f"bias_{i + 1:03d}.fits"
        _write(path, read_out(np.zeros(shape), rng), hdr)
        bias_paths.append(path)

    dark_paths = []
    for i in range(n_dark):
        rng = _rng(seed, "dark-frame", i)
        hdr = _base_header("Dark Frame", dark_exptime, next_time(dark_exptime))
        path = out_dir / f"dark_{_exptime_tag(dark_exptime)}_{i + 1:03d}.fits"
        _write(path, read_out(rng.poisson(dark64 * dark_exptime).astype(np.float64), rng), hdr)
        dark_paths.append(path)

    flat_paths: dict[str, list[Path]] = {}
    flat_level: dict[str, np.ndarray] = {}
    for f in filters:
        clock += timedelta(seconds=60.0)
        rng = _rng(seed, "flat-frame", f)
        levels = rng.uniform(*FLAT_LEVEL_RANGE, n_flat)
        flat_level[f] = levels
        flat_paths[f] = []
        for i in range(n_flat):
            hdr = _base_header("Flat Field", FLAT_EXPTIME, next_time(FLAT_EXPTIME))
            hdr["FILTER"] = (f, "Filter")
            lam = levels[i] * GAIN * flat_truth[f] + dark64 * FLAT_EXPTIME
            path = out_dir / f"flat_{_safe_name(f)}_{i + 1:03d}.fits"
            _write(path, read_out(rng.poisson(lam).astype(np.float64), rng), hdr)
            flat_paths[f].append(path)

    clock += timedelta(seconds=120.0)
    light_paths: dict[str, list[Path]] = {}
    fwhm: dict[str, np.ndarray] = {}
    dither: dict[str, np.ndarray] = {}
    sky_scale: dict[str, np.ndarray] = {}
    cosmic: dict[str, np.ndarray] = {}
    tag = _safe_name(object_name)
    for fi, f in enumerate(filters):
        if fi:
            clock += timedelta(seconds=60.0)
        rng = _rng(seed, "light-setup", f)
        fwhm[f] = np.clip(FWHM * np.exp(rng.normal(0.0, 0.08, n_light)), 2.2, 4.2)
        sky_scale[f] = 1.0 + rng.normal(0.0, 0.02, n_light)
        offsets = rng.uniform(-dither_px, dither_px, (n_light, 2)) if dither_px > 0 \
            else np.zeros((n_light, 2))
        if fi == 0 and n_light:
            offsets[0] = 0.0  # the first light frame defines the truth grid
        dither[f] = offsets
        light_paths[f] = []
        for i in range(n_light):
            rng = _rng(seed, "light-frame", f, i)
            dy, dx = offsets[i]
            hdr = _base_header("Light Frame", light_exptime, next_time(light_exptime))
            hdr["FILTER"] = (f, "Filter")
            hdr["OBJECT"] = (object_name, "Target")
            w = ref_wcs.deepcopy()
            w.wcs.crpix = [w.wcs.crpix[0] + dx, w.wcs.crpix[1] + dy]
            wcs_header = w.to_header()
            # astropy adds a time reference that means nothing for a still image.
            wcs_header.remove("MJDREF", ignore_missing=True)
            hdr.update(wcs_header)
            star_e = _moffat_stars(shape, star_x + dx, star_y + dy,
                                   star_flux[f] * light_exptime, fwhm[f][i])
            sky_e = sky[f] * sky_scale[f][i] * GAIN * light_exptime
            lam = (star_e + sky_e) * flat_truth[f] + dark64 * light_exptime
            electrons = rng.poisson(lam).astype(np.float64)
            cy, cx, cr_adu = _cosmic_rays(shape, rng)
            np.add.at(electrons, (cy, cx), cr_adu * GAIN)
            path = out_dir / f"light_{tag}_{_safe_name(f)}_{i + 1:03d}.fits"
            _write(path, read_out(electrons, rng), hdr)
            light_paths[f].append(path)
            cosmic[path.name] = np.stack([cy, cx], axis=1)

    truth: dict[str, Any] = {
        "bias_level": BIAS_LEVEL,
        "bias_columns": bias_columns,
        "read_noise": READ_NOISE,
        "gain": GAIN,
        "dark_current": dark_current,
        "hot_pixels": hot_pixels,
        "flat": flat_truth,
        "vignetting": vignetting,
        "flat_level": flat_level,
        "flat_exptime": FLAT_EXPTIME,
        "sky": sky,
        "sky_scale": sky_scale,
        "stars": stars,
        "star_flux": star_flux,
        "fwhm": fwhm,
        "moffat_beta": MOFFAT_BETA,
        "dither": dither,
        "cosmic_rays": cosmic,
        "wcs": ref_wcs,
        "pixel_scale": PIXEL_SCALE,
    }
    return SampleNight(directory=out_dir, bias=bias_paths, dark=dark_paths, flat=flat_paths,
                       light=light_paths, truth=truth)
