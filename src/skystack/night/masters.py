"""Master calibration frames, each made with the combine engine (any backend).

* bias: sigma-clipped mean of the (overscan-subtracted, trimmed) bias frames;
* dark per exposure time: sigma-clipped mean of bias-subtracted darks, ADU in that exposure;
* flat per filter: bias- and dark-corrected flats, each scaled to a common median
  (``scale="median"``), sigma-clipped mean, then divided by its own median so that the master
  flat has median 1 exactly (``FLATNORM`` records the divisor, in ADU);
* bad-pixel mask (uint8, 1 = bad): *hot* pixels whose dark current (master dark / its EXPTIME,
  ADU/s) exceeds the median by more than ``hot_sigma`` robust sigmas (MAD-based, from a sample
  of rows) and by at least ``hot_floor`` ADU over the exposure; *dead/low* pixels whose master
  flat response is below ``low_response`` (or above ``1 / low_response``), or not finite.

Every master is float32 in the calibrated frame's geometry (after trimming), pixel (0, 0) the
first row and column of the trimmed area. Writing is the caller's business (see
:mod:`skystack.night.products`): functions here write to the path they are given.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std

from ..io.inputs import Frame
from ..io.reader import Tile
from ..normalization import frame_sample, sample_rows

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


def _robust_level(frame: Frame) -> tuple[float, float]:
    """(median, MAD-based sigma) of a frame's sampled pixels."""
    values = frame_sample(frame, sample_rows(frame.shape))
    return float(np.median(values)), float(mad_std(values))


def badpix_mask(shape: tuple[int, int], dark: Frame | None, dark_exptime: float,
                flats: list[Frame], *, hot_sigma: float = 5.0, hot_floor: float = 5.0,
                low_response: float = 0.5, band_rows: int = 256) -> tuple[np.ndarray, dict]:
    """The bad-pixel mask (uint8, 1 = bad) and counts ``{"hot": n, "low": n}``.

    ``dark`` is the master dark (bias-subtracted, ADU in ``dark_exptime`` seconds), ``flats`` the
    normalised master flats; either may be missing. Read in bands of ``band_rows`` rows."""
    rows, cols = shape
    mask = np.zeros(shape, np.uint8)
    counts = {"hot": 0, "low": 0}
    threshold = None
    if dark is not None:
        median, sigma = _robust_level(dark)
        threshold = median + max(hot_sigma * sigma, hot_floor)
    band = np.empty((band_rows, cols), np.float32)
    for r0 in range(0, rows, band_rows):
        r1 = min(rows, r0 + band_rows)
        view = band[: r1 - r0]
        tile = Tile(r0, r1, 0, cols)
        if dark is not None:
            dark.source.read(tile, view)
            hot = view > threshold
            counts["hot"] += int(hot.sum())
            mask[r0:r1][hot] = 1
        for flat in flats:
            flat.source.read(tile, view)
            with np.errstate(invalid="ignore"):
                low = ~((view >= low_response) & (view <= 1.0 / low_response))
            counts["low"] += int((low & (mask[r0:r1] == 0)).sum())
            mask[r0:r1][low] = 1
    counts["dark_threshold_adu"] = threshold
    counts["dark_exptime"] = dark_exptime
    return mask, counts


def write_badpix(path: str, mask: np.ndarray, header: fits.Header) -> None:
    """Write the mask as a uint8 primary image (1 = bad) with ``header`` cards."""
    hdu = fits.PrimaryHDU(mask, header=header)
    hdu.header["BUNIT"] = ("", "1 = bad pixel (hot, dead or low response)")
    hdu.writeto(path)
