"""Master calibration frames, each made with the combine engine (any backend).

* bias: sigma-clipped mean of the (overscan-subtracted, trimmed) bias frames;
* dark per exposure time: sigma-clipped mean of bias-subtracted darks, ADU in that exposure;
* flat per filter: bias- and dark-corrected flats, each scaled to a common median
  (``scale="median"``), sigma-clipped mean, then divided by its own median so that the master
  flat has median 1 exactly (``FLATNORM`` records the divisor, in ADU);
* bad-pixel mask (uint8, 1 = bad): *hot* pixels of the master dark, above their *local* level
  (a running median) by more than ``hot_sigma`` local robust sigmas and at least ``hot_floor``
  ADU over the exposure, so that amplifier glow and gradients are not taken for hot pixels;
  *dead/low* pixels whose master flat response, relative to its local level, is below
  ``low_response`` (or above ``1 / low_response``), or not finite (see
  :mod:`skystack.night.defects`).

Every master is float32 in the calibrated frame's geometry (after trimming), pixel (0, 0) the
first row and column of the trimmed area. Writing is the caller's business (see
:mod:`skystack.night.products`): functions here write to the path they are given.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from ..io.inputs import Frame
from ..io.reader import Tile
from .defects import find_hot_pixels, find_low_response

BIAS_OPTIONS = dict(method="mean", reject="sigclip", center="median", spread="mad",
                    sigma=3.0, maxiters=0)
DARK_OPTIONS = dict(method="mean", reject="sigclip", center="median", spread="mad",
                    sigma=3.0, maxiters=0)
FLAT_OPTIONS = dict(method="mean", reject="sigclip", center="median", spread="mad",
                    sigma=3.0, maxiters=0, scale="median")


def normalise_flat(path: str) -> float:
    """Divide the combined flat at ``path`` (image and UNCERT) by its median, in place.

    Returns the median (ADU). Holds one image plane in memory (the median needs all pixels)."""
    with fits.open(path, mode="update", memmap=True) as hdul:
        data = hdul[0].data
        median = float(np.nanmedian(data))
        if not np.isfinite(median) or median <= 0:
            from ..errors import SkystackError

            raise SkystackError(f"{path}: combined flat has median {median}, cannot normalise")
        hdul[0].data = (data / np.float32(median)).astype(np.float32)
        if "UNCERT" in hdul:
            hdul["UNCERT"].data = (hdul["UNCERT"].data / np.float32(median)).astype(np.float32)
        hdul[0].header["FLATNORM"] = (median, "ADU: the combined flat was divided by this")
        hdul[0].header["BUNIT"] = ("", "relative response, median 1")
    return median


def _rows_reader(frame: Frame):
    """``read(r0, r1)``: rows ``r0:r1`` of a master frame (every column, float32)."""
    cols = frame.shape[1]

    def read(r0: int, r1: int) -> np.ndarray:
        out = np.empty((r1 - r0, cols), np.float32)
        frame.source.read(Tile(r0, r1, 0, cols), out)
        return out

    return read


def badpix_mask(shape: tuple[int, int], dark: Frame | None, dark_exptime: float,
                flats: list[Frame], *, hot_sigma: float = 5.0, hot_floor: float = 5.0,
                low_response: float = 0.5, band_rows: int = 256) -> tuple[np.ndarray, dict]:
    """The bad-pixel mask (uint8, 1 = bad) and counts ``{"hot": n, "low": n}``.

    ``dark`` is the master dark (ADU in ``dark_exptime`` seconds), ``flats`` the normalised
    master flats; either may be missing. Hot and low-response pixels are found against the
    local level (:mod:`skystack.night.defects`), reading bands of about ``band_rows`` rows.
    ``counts["dark_threshold_adu"]`` is the typical hot threshold above the local level."""
    mask = np.zeros(shape, np.uint8)
    counts: dict = {"hot": 0, "low": 0, "dark_threshold_adu": None,
                    "dark_exptime": dark_exptime}
    if dark is not None:
        hot, threshold = find_hot_pixels(_rows_reader(dark), shape, hot_sigma=hot_sigma,
                                         floor=hot_floor, band_rows=band_rows)
        counts["hot"] = int(hot.sum())
        counts["dark_threshold_adu"] = threshold
        mask[hot] = 1
    for flat in flats:
        low = find_low_response(_rows_reader(flat), shape, low_response=low_response,
                                band_rows=band_rows)
        counts["low"] += int((low & (mask == 0)).sum())
        mask[low] = 1
    return mask, counts


def write_badpix(path: str, mask: np.ndarray, header: fits.Header) -> None:
    """Write the mask as a uint8 primary image (1 = bad) with ``header`` cards."""
    hdu = fits.PrimaryHDU(mask, header=header)
    hdu.header["BUNIT"] = ("", "1 = bad pixel (hot, dead or low response)")
    hdu.writeto(path)
