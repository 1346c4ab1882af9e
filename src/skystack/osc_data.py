"""A synthetic night of a one-shot-colour (OSC) CMOS camera, with its colour truth.

:func:`write_osc_night` writes biases, darks, flats and lights of a cooled colour CMOS camera
(Bayer ``RGGB``, ``ROWORDER = 'TOP-DOWN'``, as N.I.N.A. writes them) and returns the truth, so
that ``skystack night`` on it can be checked for colour:

* every frame: bias level + read noise (ADU, gain 1 e-/ADU), 16-bit unsigned;
* dark current with amplifier glow (:func:`skystack.demo_data.amp_glow_map`) and hot pixels,
  in the darks and the lights (same exposure time: the dark is subtracted as it is);
* flats: a lamp of a strong colour (``FLAT_LEVELS``: different red, green and blue levels)
  through a vignetted optical path, so a flat normalised by one median for all photosites would
  shift the lights' colours by the lamp's;
* lights of one object, no FILTER (a colour camera), dithered by a few pixels with a TAN WCS
  that says so, a sky of its own colour and stars of known colours (:attr:`OscNight.stars`:
  position on the first light's grid, and counts in R, G, B as the *sensor* records them at
  the median vignetting, i.e. after the camera's own channel response, which a night does not
  remove).

Conventions: arrays ``(y, x)``, pixel centres at integers; the truth's star positions are on
the pixel grid of the first light (the night's grid for this object, aligned by WCS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .colour.cfa import CfaPattern
from .demo_data import amp_glow_map, moffat_stars, seeded_rng

__all__ = ["OscNight", "write_osc_night", "FLAT_LEVELS", "OSC_PATTERN"]

OSC_PATTERN = CfaPattern("RGGB", 0, 0, "TOP-DOWN")
BIAS_LEVEL = 500.0  # ADU
READ_NOISE = 3.0  # ADU (gain 1 e-/ADU)
DARK_CURRENT = 0.02  # e-/s
HOT_CURRENT = 30.0  # e-/s of a hot pixel
FLAT_LEVELS = (30000.0, 20000.0, 9000.0)  # e- at the flat's centre in R, G, B: a reddish lamp
SKY = (40.0, 55.0, 30.0)  # e-/s in R, G, B
FWHM = 4.0  # px


@dataclass
class OscNight:
    """Paths written and the truth (see module docstring)."""

    bias: list[Path] = field(default_factory=list)
    dark: list[Path] = field(default_factory=list)
    flat: list[Path] = field(default_factory=list)
    light: list[Path] = field(default_factory=list)
    object: str = "NGC7000"
    #: star x, y (first light's pixels) and counts (e-) in R, G, B: shape (n, 5)
    stars: np.ndarray = field(default_factory=lambda: np.empty((0, 5)))
    hot_pixels: np.ndarray = field(default_factory=lambda: np.empty((0, 2), int))
    vignetting: np.ndarray | None = None


def _header(imagetyp: str, exptime: float, when: datetime) -> fits.Header:
    h = fits.Header()
    h["IMAGETYP"] = imagetyp
    h["EXPTIME"] = exptime
    h["DATE-OBS"] = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    h["INSTRUME"] = "synthetic OSC CMOS"
    h["GAIN"] = (1.0, "e-/ADU")
    h["RDNOISE"] = (READ_NOISE, "e-")
    h["XBINNING"], h["YBINNING"] = 1, 1
    for key, value, comment in OSC_PATTERN.cards():
        h[key] = (value, comment)
    return h


def _write(path: Path, electrons: np.ndarray, header: fits.Header, rng) -> None:
    adu = BIAS_LEVEL + electrons + rng.normal(0.0, READ_NOISE, electrons.shape)
    data = np.clip(np.rint(adu), 0, 65535).astype(np.uint16)
    fits.PrimaryHDU(data, header=header).writeto(path)


def _wcs(shape, dx: float, dy: float) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [314.7, 44.3]
    w.wcs.crpix = [(shape[1] - 1) / 2 + 1 + dx, (shape[0] - 1) / 2 + 1 + dy]
    w.wcs.cdelt = [-1.5 / 3600, 1.5 / 3600]
    return w


def write_osc_night(directory: str | os.PathLike, *, shape: tuple[int, int] = (256, 256),
                    n_bias: int = 5, n_dark: int = 3, n_flat: int = 5, n_light: int = 5,
                    exptime: float = 60.0, n_stars: int = 12, seed: int = 0) -> OscNight:
    """Write the OSC night into ``directory`` (created) and return its truth."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    night = OscNight()
    channel = OSC_PATTERN.channel_map(shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    vignetting = 1.0 - 0.35 * (((yy - cy) ** 2 + (xx - cx) ** 2) / (cx ** 2 + cy ** 2))
    night.vignetting = vignetting
    rng = seeded_rng(seed, "hot")
    n_hot = max(4, shape[0] * shape[1] // 2000)
    hot = np.stack([rng.integers(4, shape[0] - 4, n_hot), rng.integers(4, shape[1] - 4, n_hot)],
                   axis=1)
    night.hot_pixels = hot
    current = DARK_CURRENT + amp_glow_map(shape, peak=2.0, scale=0.1)
    current[hot[:, 0], hot[:, 1]] += HOT_CURRENT
    start = datetime(2026, 8, 14, 21, 0, 0)

    def frames(kind: str, n: int):
        for k in range(n):
            yield k, seeded_rng(seed, kind, k), start + timedelta(minutes=len(night.bias)
                                                                   + 3 * k)

    for k, r, when in frames("bias", n_bias):
        night.bias.append(out / f"bias_{k:03d}.fits")
        _write(night.bias[-1], np.zeros(shape), _header("Bias Frame", 0.0, when), r)
    for k, r, when in frames("dark", n_dark):
        night.dark.append(out / f"dark_{exptime:g}s_{k:03d}.fits")
        _write(night.dark[-1], r.poisson(current * exptime).astype(float),
               _header("Dark Frame", exptime, when), r)
    lamp = np.asarray(FLAT_LEVELS)[channel] * vignetting
    for k, r, when in frames("flat", n_flat):  # 1 s: dark current negligible, no dark needed
        night.flat.append(out / f"flat_{k:03d}.fits")
        _write(night.flat[-1], r.poisson(lamp).astype(float), _header("Flat Field", 1.0, when), r)
    rng = seeded_rng(seed, "stars")
    margin = 24
    x = rng.uniform(margin, shape[1] - margin, n_stars)
    y = rng.uniform(margin, shape[0] - margin, n_stars)
    total = rng.uniform(2e5, 6e5, n_stars) * exptime / 60.0
    # Colours from red to blue stars: (R, G, B) fractions of the total.
    warmth = rng.uniform(0.0, 1.0, n_stars)
    fractions = np.stack([0.2 + 0.4 * warmth, np.full(n_stars, 0.35), 0.45 - 0.4 * warmth], 1)
    counts = total[:, None] * fractions
    night.stars = np.column_stack([x, y, counts])
    dithers = [(0.0, 0.0)] + [tuple(seeded_rng(seed, "dither", k).uniform(-6, 6, 2))
                              for k in range(1, n_light)]
    for k, (dx, dy) in enumerate(dithers):
        r = seeded_rng(seed, "light", k)
        # Each channel's scene, rendered on the frame's pixels (stars moved by the dither),
        # seen through the vignetting normalised to its median (the truth's reference level).
        scene = np.empty(shape)
        for c in range(3):
            plane = SKY[c] * exptime + moffat_stars(shape, x + dx, y + dy, counts[:, c], FWHM)
            scene[channel == c] = plane[channel == c]
        signal = scene * vignetting / np.median(vignetting) + current * exptime
        header = _header("Light Frame", exptime, start + timedelta(hours=1, minutes=2 * k))
        header["OBJECT"] = night.object
        header.update(_wcs(shape, dx, dy).to_header())
        night.light.append(out / f"light_{k:03d}.fits")
        _write(night.light[-1], r.poisson(np.clip(signal, 0, None)).astype(float), header, r)
    return night
