"""A tiny raw night written for tests of the night's products (names, fingerprints, modes).

Lights are flat fields of ``SKY`` ADU with a celestial WCS (every light of an object on the
same grid), so a stack's pixels are known without any star: a light divided by a flat whose
left half responds ``LOW`` and right half 1.0 (normalised to its median) has a left/right
ratio of ``1 / LOW``, while a uniform flat leaves it at 1."""

from __future__ import annotations

import os

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

SHAPE = (64, 64)
SKY = 1000.0
LOW = 0.6


def _wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [132.8, 11.8]
    w.wcs.crpix = [(SHAPE[1] + 1) / 2, (SHAPE[0] + 1) / 2]
    w.wcs.cdelt = [-1e-4, 1e-4]
    return w


def _write(path, data, cards) -> str:
    header = fits.Header(cards)
    fits.PrimaryHDU(np.asarray(data, np.float32), header=header).writeto(path)
    return os.fspath(path)


def write_flat(folder, name: str, filt: str, *, left: float = 1.0, n: int = 3,
               seed: int = 0) -> list[str]:
    """``n`` flats of FILTER ``filt``: 20000 ADU times the response (``left`` on the left half,
    1.0 on the right), with a little noise."""
    rng = np.random.default_rng(seed)
    response = np.ones(SHAPE, np.float32)
    response[:, : SHAPE[1] // 2] = left
    paths = []
    for k in range(n):
        data = 20000.0 * response + rng.normal(0, 5, SHAPE)
        paths.append(_write(os.path.join(folder, f"{name}_{k}.fits"), data,
                            [("IMAGETYP", "FLAT"), ("FILTER", filt), ("EXPTIME", 2.0),
                             ("DATE-OBS", f"2026-03-14T20:0{k}:00")]))
    return paths


def write_lights(folder, name: str, obj: str, filt: str, *, n: int = 3, seed: int = 1,
                 response_left: float = 1.0) -> list[str]:
    """``n`` lights of ``SKY`` ADU (times ``response_left`` on the left half)."""
    rng = np.random.default_rng(seed)
    header = _wcs().to_header()
    paths = []
    for k in range(n):
        data = np.full(SHAPE, SKY, np.float32) + rng.normal(0, 3, SHAPE)
        data[:, : SHAPE[1] // 2] *= response_left
        cards = [("IMAGETYP", "LIGHT"), ("OBJECT", obj), ("FILTER", filt), ("EXPTIME", 30.0),
                 ("DATE-OBS", f"2026-03-14T21:{10 + k}:00"), *header.cards]
        paths.append(_write(os.path.join(folder, f"{name}_{k}.fits"), data, cards))
    return paths


def left_right_ratio(path) -> float:
    """Median of a product's left half over that of its right half."""
    data = fits.getdata(path)
    half = SHAPE[1] // 2
    return float(np.nanmedian(data[:, 4:half - 4]) / np.nanmedian(data[:, half + 4:-4]))
