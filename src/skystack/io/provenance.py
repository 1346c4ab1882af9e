"""The output header: what was combined, how, when, by which version and backend.

Keywords written (all in the primary header):

* ``NCOMBINE`` frames combined; ``IMCMB001``… their file names (IRAF convention, first 999;
  printable ASCII, non-ASCII characters escaped: :func:`skystack.io.labels.fits_label`);
* ``COMBMETH``, ``REJECT`` and the parameters of the rejection used (``SIGLOW``, ``SIGHIGH``,
  ``SIGCEN``, ``SIGSPRD``, ``MAXITERS``, ``NLOW``, ``NHIGH``, ``RNGLOW``, ``RNGHIGH``, ``PCLOW``,
  ``PCHIGH``), ``SCALEBY``, ``ZEROBY``, ``WEIGHTS``, and each frame's values used, ``SCAL001``…,
  ``ZERO001``…, ``WGHT001``… (only those asked for; :func:`frame_value_cards`); the input
  selection when one was made (``SELWHERE``, ``NWHEREX``, ``NEXCLUDE`` and a HISTORY line:
  :mod:`skystack.io.selection`);
* ``EXPTIME``: the sum of the inputs' for ``sum``, their mean otherwise;
* ``DATE-OBS``/``MJD-OBS``: start of the earliest frame; ``DATE-END``/``MJD-END``: end of the
  latest (start + EXPTIME); ``DATE-AVG``/``MJD-AVG``: exposure-weighted mean of the frames'
  mid-exposure times (FITS WCS paper III keywords; MJD-OBS keeps its standard meaning, the start).
  These describe the combined frames only: the time keywords of any WCS header copied in (the
  first frame's, a reference grid's) are dropped (:data:`TIME_KEYS`);
* ``BUNIT``: the inputs' common unit (:func:`skystack.io.units.common_unit`; mixed units are
  refused); the callers write ``adu`` ("assumed") when no input has one;
* ``UNCMETH``: how UNCERT was computed; ``GAIN``/``RDNOISE``: the product's *effective* gain
  (e-/ADU) and read noise (e-), not the inputs' (derivation in :mod:`skystack.uncertainty`);
* ``SATMASK``: frames whose saturated raw pixels were masked, 0 = no saturation masking;
  ``SATLEVEL`` their level (:mod:`skystack.io.saturation`);
* ``SKYSVER`` skystack version, ``SKYSBKND`` the backend;
* the first frame's WCS (SIP included), and keywords such as OBJECT and FILTER where every frame
  agrees on them;
* ``BAYERPAT``, ``XBAYROFF``, ``YBAYROFF``, ``ROWORDER`` when the frames are colour (Bayer) data
  with one layout (:func:`skystack.colour.cfa.common_cfa`; mixing colour and monochrome frames
  or layouts is refused): combined pixel by pixel, each photosite keeps its colour.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from astropy.io import fits

from .._version import __version__
from ..colour.cfa import common_cfa
from ..config import CombineOptions
from ..exposure import MAX_EXPTIME
from ..regrid.header_wcs import wcs_cards
from ..rejection_noise import stat_rejection_cards
from ..uncertainty import effective_noise, noise_arrays
from .inputs import Frame
from .labels import fits_label
from .saturation import saturation_cards
from .units import common_unit

# Descriptive keywords carried over when every input frame has the same value.
SHARED_KEYS = ("OBJECT", "FILTER", "IMAGETYP", "TELESCOP", "INSTRUME", "OBSERVER",
               "XBINNING", "YBINNING", "CCDSUM", "EQUINOX", "RADESYS", "ORIGIN")


def exposure_seconds(header) -> float:
    """EXPTIME (or EXPOSURE) in seconds; NaN when absent, not a number, negative or beyond
    :data:`skystack.exposure.MAX_EXPTIME` (1e6 s, so NaN and infinity too)."""
    value = header.get("EXPTIME", header.get("EXPOSURE"))
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if 0 <= value <= MAX_EXPTIME else math.nan


def _frame_times(frame: Frame):
    """(start MJD, exposure seconds) of a frame, or None where the header lacks a date."""
    from astropy.time import Time

    h = frame.header
    exptime = exposure_seconds(h)
    exptime = exptime if math.isfinite(exptime) else 0.0
    try:
        if "DATE-OBS" in h:
            value = str(h["DATE-OBS"]).strip()
            if "T" not in value and "TIME-OBS" in h:
                value = f"{value}T{str(h['TIME-OBS']).strip()}"
            return Time(value, scale="utc").mjd, exptime
        if "MJD-OBS" in h:
            return float(h["MJD-OBS"]), exptime
    except (ValueError, TypeError):
        return None
    return None


def _isot(mjd: float) -> str:
    from astropy.time import Time

    return Time(mjd, format="mjd", scale="utc").isot


def build_header(frames: list[Frame], options: CombineOptions, backend: str,
                 params=None) -> fits.Header:
    """The provenance header of a combine of ``frames`` (see module docstring); ``params``:
    the frames' :class:`~skystack.core.records.FrameParams` (scale, zero, weights) the combine
    uses, written per frame (:func:`frame_value_cards`); without them, no per-frame values
    and, for weighted combines, no effective GAIN."""
    h = fits.Header()
    first = frames[0].header
    for key in SHARED_KEYS:
        if key in first and all(f.header.get(key) == first[key] for f in frames[1:]):
            h[key] = (first[key], first.comments[key])
    cfa = common_cfa(frames)  # a pixel-by-pixel combine keeps the Bayer layout
    if cfa is not None:
        for key, value, comment in cfa.cards():
            h[key] = (value, comment)
    unit = common_unit(frames)
    if unit is not None:
        h["BUNIT"] = (unit, "unit of the inputs")
    _add_wcs(h, first)
    h["NCOMBINE"] = (len(frames), "number of frames combined")
    h["COMBMETH"] = (options.method, "skystack combine method")
    h["REJECT"] = (options.reject, "skystack rejection")
    if options.reject == "sigclip":
        h["SIGLOW"] = (options.sigma_low, "sigma clip: lower threshold (sigma)")
        h["SIGHIGH"] = (options.sigma_high, "sigma clip: upper threshold (sigma)")
        h["SIGCEN"] = (options.center, "sigma clip: centre")
        h["SIGSPRD"] = (options.spread, "sigma clip: spread (mad scaled to sigma)")
        h["MAXITERS"] = (options.maxiters, "sigma clip: max iterations (0 = converge)")
    elif options.reject == "minmax":
        h["NLOW"] = (options.nlow, "minmax: lowest values dropped per pixel")
        h["NHIGH"] = (options.nhigh, "minmax: highest values dropped per pixel")
    elif options.reject == "range":
        if options.range_low is not None:
            h["RNGLOW"] = (options.range_low, "range: lowest raw value kept")
        if options.range_high is not None:
            h["RNGHIGH"] = (options.range_high, "range: highest raw value kept")
    elif options.reject == "percentile":
        h["PCLOW"] = (options.plow, "percentile: % of lowest values dropped")
        h["PCHIGH"] = (options.phigh, "percentile: % of highest values dropped")
    elif options.reject in ("winsor", "linfit"):
        h["SIGLOW"] = (options.sigma_low, f"{options.reject}: lower threshold (sigma)")
        h["SIGHIGH"] = (options.sigma_high, f"{options.reject}: upper threshold (sigma)")
        h["MAXITERS"] = (options.maxiters, f"{options.reject}: max iterations (0 = converge)")
    elif options.reject == "pctclip":
        h["PCTCLO"] = (options.pctclip_low, "pctclip: max (median - x) / |median| kept")
        h["PCTCHI"] = (options.pctclip_high, "pctclip: max (x - median) / |median| kept")
    stat_rejection_cards(h, options)  # esd, ccdclip, pclip
    h["SCALEBY"] = (options.scale, "multiplicative normalisation to frame 1")
    h["ZEROBY"] = (options.zero, "additive normalisation to frame 1")
    h["WEIGHTS"] = (options.weights.describe(), "frame weights (mean and sum)")
    for key, value, comment in options.selection:  # --where/--exclude (io/selection.py)
        h.append((key, value, comment) if key != "HISTORY" else (key, value), end=True)
    if params is not None:
        frame_value_cards(h, options, params)
    noise_cards(h, frames, options, None if params is None else params.weights)
    saturation_cards(h, frames)

    exptimes = []
    for f in frames:
        try:
            value = float(f.header["EXPTIME"])
        except (KeyError, TypeError, ValueError):
            break
        if not 0 <= value <= MAX_EXPTIME:
            break  # a corrupt EXPTIME (NaN, negative, 1e308): the output gets none
        exptimes.append(value)
    else:
        if options.method == "sum":
            h["EXPTIME"] = (float(np.sum(exptimes)), "[s] sum of the inputs' EXPTIME")
        else:
            h["EXPTIME"] = (float(np.mean(exptimes)), "[s] mean of the inputs' EXPTIME")

    times = [_frame_times(f) for f in frames]
    if all(t is not None for t in times):
        start = np.array([t[0] for t in times])
        expo = np.array([t[1] for t in times])
        end = start + expo / 86400.0
        mid = start + expo / 2 / 86400.0
        avg = float(np.average(mid, weights=expo)) if expo.sum() > 0 else float(mid.mean())
        h["DATE-OBS"] = (_isot(start.min()), "start of the earliest frame (UTC)")
        h["MJD-OBS"] = (float(start.min()), "start of the earliest frame")
        h["DATE-END"] = (_isot(end.max()), "end of the latest frame (UTC)")
        h["MJD-END"] = (float(end.max()), "end of the latest frame")
        h["DATE-AVG"] = (_isot(avg), "exposure-weighted mid-time (UTC)")
        h["MJD-AVG"] = (avg, "exposure-weighted mid-time")
    for i, f in enumerate(frames[:999], start=1):
        h[f"IMCMB{i:03d}"] = (fits_label(f.label)[:68], "input frame")
    if len(frames) > 999:
        h["IMCMBMOR"] = (len(frames) - 999, "further inputs not listed")
    h["SKYSVER"] = (__version__, "skystack version")
    h["SKYSBKND"] = (backend, "skystack compute backend")
    h["HISTORY"] = f"skystack {__version__}: {options.method} of {len(frames)} frames, " \
                   f"reject={options.reject}"
    return h


_UNCMETH_COMMENT = {"scatter": "UNCERT: scatter between the kept values",
                    "model": "UNCERT: noise model from GAIN, RDNOISE, signal",
                    "propagate": "UNCERT: propagated from the inputs' uncertainty"}


def noise_cards(header, frames, options: CombineOptions, weights=None) -> None:
    """Write ``UNCMETH`` and the product's effective ``GAIN``/``RDNOISE`` (derivation in
    :mod:`skystack.uncertainty`) into ``header``, with HISTORY saying why either is missing;
    ``weights``: the frames' weights (needed when ``options.weighted``)."""
    mode = options.uncertainty
    if mode in _UNCMETH_COMMENT:
        header["UNCMETH"] = (mode, _UNCMETH_COMMENT[mode])
    gain, rdnoise = noise_arrays(frames)
    if np.isnan(gain).any():
        if np.isfinite(gain).any():
            header["HISTORY"] = "GAIN not written: not every input has one"
        return
    why = None
    if options.method not in ("mean", "sum", "median"):
        why = f"no effective value for {options.method}"
    elif options.scale != "none":
        why = "frames scaled (--scale)"
    elif options.weighted and weights is None:
        why = "frame weights not given"
    if why is not None:
        header["HISTORY"] = f"GAIN, RDNOISE not written: {why}"
        return
    n = len(frames)
    have_rn = not np.isnan(rdnoise).any()
    w = np.asarray(weights, np.float64) if options.weighted else np.ones(n)
    g_eff, r_eff = effective_noise(options.method, n, gain, rdnoise if have_rn else None, w)
    mixed = np.unique(gain).size > 1
    header["GAIN"] = (float(g_eff), f"[e-/ADU] effective, {options.method} of {n}"
                      + (" (harmonic)" if mixed else ""))
    if have_rn:
        header["RDNOISE"] = (float(r_eff), f"[e-] effective, {options.method} of {n}")
    else:
        header["HISTORY"] = "RDNOISE not written: not every input has one"


def frame_value_cards(header, options: CombineOptions, params) -> None:
    """Each frame's scale ``SCAL001``…, zero ``ZERO001``… and weight ``WGHT001``… (the values
    the combine uses, from ``params``; first 999 frames, numbered as ``IMCMB001``…), each only
    when that normalisation or weighting is asked for."""
    if options.scale == "none" and options.zero == "none" and not options.weighted:
        return
    kinds = (("SCAL", options.scale != "none", params.scale, f"scale by {options.scale}"),
             ("ZERO", options.zero != "none", params.zero, f"zero by {options.zero}"),
             ("WGHT", options.weighted, params.weights,
              f"weight ({options.weights.describe()})"))
    for prefix, wanted, values, what in kinds:
        if wanted:
            for i, v in enumerate(np.asarray(values, np.float64)[:999], start=1):
                header[f"{prefix}{i:03d}"] = (float(f"{v:.7g}"), f"IMCMB{i:03d} {what}")


def _add_wcs(out: fits.Header, header: fits.Header) -> None:
    from astropy.wcs import WCS, FITSFixedWarning

    if not any(k.startswith(("CTYPE", "CRPIX", "CD1_", "PC1_")) for k in header):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2)
            wcs_header = wcs_cards(wcs)
    except Exception:
        return
    for card in wcs_header.cards:
        if card.keyword not in ("COMMENT", "HISTORY", "WCSAXES"):
            out[card.keyword] = (card.value, card.comment)
