"""Master calibration frames, each made with the combine engine (any backend).

* bias: sigma-clipped mean of the (overscan-subtracted, trimmed) bias frames;
* dark per exposure time: sigma-clipped mean of bias-subtracted darks, ADU in that exposure
  (see :func:`choose_dark` for how a dark is matched to a frame, and why a dark made without
  a bias is never scaled);
* flat per filter: bias- and dark-corrected flats, each scaled to a common median
  (``scale="median"``), sigma-clipped mean, then divided by its own median so that the master
  flat has median 1 exactly (``FLATNORM`` records the divisor, in ADU; a colour (Bayer) flat
  per colour channel, see :func:`normalise_flat`);
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

import math
import warnings
from collections.abc import Mapping
from typing import TypeVar

import numpy as np
from astropy.io import fits

from ..io.inputs import Frame
from ..io.reader import Tile
from .defects import find_hot_pixels, find_low_response

T = TypeVar("T")  # what stands for a master dark in choose_dark

BIAS_OPTIONS = dict(method="mean", reject="sigclip", center="median", spread="mad",
                    sigma=3.0, maxiters=0)
DARK_OPTIONS = dict(method="mean", reject="sigclip", center="median", spread="mad",
                    sigma=3.0, maxiters=0)
FLAT_OPTIONS = dict(method="mean", reject="sigclip", center="median", spread="mad",
                    sigma=3.0, maxiters=0, scale="median")


def _tag(seconds: float) -> str:
    return f"{seconds:g}s"


def choose_dark(darks: Mapping[float, T], exptime: float, bias_subtracted: bool
                ) -> tuple[T | None, float, str]:
    """The master dark for a frame of ``exptime`` seconds: ``(path, scale, note)``.

    ``darks`` maps exposure times (s) to master dark paths (or any value standing for a
    dark: ``skystack inspect`` uses the same rule for its flats). The dark of the same exposure time
    (within 0.1 %) is used as it is. Otherwise, when the darks are bias-subtracted, the longest
    one is scaled by ``exptime / t_dark`` (dark current grows linearly with time). A dark made
    without a bias still holds the bias level, which does not grow with time, so scaling it
    would be wrong: the dark of the closest exposure time is then subtracted unscaled, which
    removes the bias exactly and leaves only the dark current of the exposure difference (a
    few ADU for a cooled camera) — far better than leaving the bias level in a frame that is
    then divided by the flat. The note says so. No dark, or no ``exptime``: nothing
    subtracted, with a note.
    """
    if not darks:
        return None, 1.0, "no dark"
    if not math.isfinite(exptime):
        return None, 1.0, "no EXPTIME: dark not subtracted"
    for t, path in darks.items():
        if abs(t - exptime) <= 1e-3 * max(1.0, t):
            return path, 1.0, ""
    if bias_subtracted:
        t = max(darks)
        return darks[t], exptime / t, f"dark {_tag(t)} scaled by {exptime / t:.4g}"
    t = min(darks, key=lambda d: (abs(d - exptime), -d))
    return darks[t], 1.0, (f"no bias: dark {_tag(t)} subtracted unscaled (it holds the bias "
                           f"level), dark current of {exptime - t:+g} s not corrected")


def _flat_level(values: np.ndarray, sample: np.ndarray, name: str, what: str) -> float:
    """The median of a flat's ``values`` (ADU), refused when it holds no light (see
    :func:`normalise_flat`; the scatter is measured on ``sample``, a subset of ``values``);
    ``what`` names the pixels in the message."""
    from ..errors import SkystackError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN
        median = float(np.nanmedian(values))
        spread = 1.4826 * float(np.nanmedian(np.abs(sample - median)))
    if not np.isfinite(median):
        raise SkystackError(f"{name}: combined flat has no valid pixel{what} (all NaN)")
    if median <= 0:
        raise SkystackError(f"{name}: combined flat has median {median:.4g} ADU{what} (after "
                            "bias and dark), not positive: no light")
    if median <= spread:
        raise SkystackError(f"{name}: combined flat has median {median:.4g} ADU{what}, not "
                            f"above its pixel scatter {spread:.4g} ADU: no light")
    return median


def normalise_flat(path: str, label: str | None = None) -> float:
    """Divide the combined flat at ``path`` (image and UNCERT) by its median, in place.

    Returns the median (ADU). A flat whose median is not finite (all NaN), not positive, or not
    above its own robust spread (MAD-based standard deviation: no signal, only noise) cannot be
    normalised: :class:`SkystackError` naming ``label`` (default ``path``; the caller's final
    product name when ``path`` is a temporary file). Holds one image plane in memory (the
    median needs all pixels).

    A colour (Bayer, ``BAYERPAT``) flat is normalised *per colour channel*: the red, green and
    blue photosites are each divided by their own channel's median (``FLATNR``, ``FLATNG``,
    ``FLATNB``), so that each channel's response has median 1. Dividing all photosites by one
    median would leave the lamp's (or sky's) colour in the flat, and dividing a light by it
    would shift the light's colours by the inverse. ``FLATNORM`` (and the value returned) is
    then the green channel's median."""
    from ..colour.cfa import CHANNELS, cfa_pattern

    name = label or path
    with fits.open(path, mode="update", memmap=True) as hdul:
        data = hdul[0].data
        pattern = cfa_pattern(hdul[0].header, name)
        if pattern is None:
            median = _flat_level(data, data[::4, ::4], name, "")
            divisor = np.float32(median)
        else:
            channel = pattern.channel_map(data.shape)
            levels = []
            for c, ch in enumerate(CHANNELS):
                values = data[channel == c]
                levels.append(_flat_level(values, values[::4], name, f" in {ch} photosites"))
            divisor = np.asarray(levels, np.float32)[channel]
            median = levels[1]
            for ch, level in zip(CHANNELS, levels, strict=True):
                hdul[0].header[f"FLATN{ch}"] = (level, f"ADU: {ch} photosites divided by this")
        hdul[0].data = (data / divisor).astype(np.float32)
        if "UNCERT" in hdul:
            hdul["UNCERT"].data = (hdul["UNCERT"].data / divisor).astype(np.float32)
        comment = ("ADU: the combined flat was divided by this" if pattern is None else
                   "ADU: green level (each colour by its own)")
        hdul[0].header["FLATNORM"] = (median, comment)
        hdul[0].header["BUNIT"] = ("", "relative response, median 1")
    return median


def skip_flat_group(camera, path: str, product, pairs, reason: str, log) -> None:
    """Record a flat group that could not be made (``reason``, one line naming ``path``): the
    product fails, its frames are not used, and the lights of its filter are calibrated
    without a flat (:func:`missing_flat_note` says why). ``camera`` holds the night's masters
    of one camera (a :class:`skystack.night.plan.CameraMasters`); ``pairs`` are (frame record,
    frame)."""
    filt = next(f for f, p in camera.flats.items() if p == path)
    del camera.flats[filt]
    camera.failed_flats[filt] = reason
    product.status = "failed"
    product.notes.append(f"{reason}; lights in {filt} are not flat-fielded")
    for rec, _ in pairs:
        rec.used = False
        rec.reason = f"flat group skipped: {reason}"
    log(f"flat    failed  {reason}; lights in {filt} are not flat-fielded")


def missing_flat_note(camera, filt: str) -> str:
    """Why a light of filter ``filt`` is not flat-fielded (``camera``: a
    :class:`skystack.night.plan.CameraMasters`)."""
    failed = camera.failed_flats.get(filt)
    if failed:
        return f"not flat-fielded: the {filt} flat failed ({failed})"
    return f"no flat for filter {filt}"


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
