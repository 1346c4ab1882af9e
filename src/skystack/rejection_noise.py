"""The CCD noise parameters of ``--reject ccdclip``, resolved and checked before any pixel.

IRAF's ccdclip takes the sigma of a pixel from the CCD noise model of the *raw* values (gain in
e-/ADU, read noise in e-; :mod:`skystack.backends.cpu.rejections_stat`). ``--gain`` and
``--rdnoise`` give them; when not given they come from the frames' headers (``GAIN``;
``RDNOISE``, ``READNOIS`` or ``RON``, as :func:`skystack.uncertainty.frame_noise` reads them),
which must then be present and equal in every frame: the kernels use one noise model per run.

The kernels see normalised values ``raw * s + z`` and convert the centre back to raw units with
one ``s`` and ``z``: exact when every frame has the same normalisation (no ``--scale``/``--zero``,
or frames whose statistics agree). Frames normalised differently would each need their own
sigma at a pixel, which the kept-range kernels cannot express, so that combination is refused
(:func:`check_ccdclip_scaling`) rather than clipped with a wrong sigma.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .config import CombineOptions
from .errors import SkystackError
from .uncertainty import frame_noise

__all__ = ["resolve_ccd_noise", "check_ccdclip_scaling", "check_ccdclip_resampling",
           "stat_rejection_cards"]


def _agreed(frames, index: int, what: str, option: str) -> float:
    """The header value ``what`` (index into frame_noise) shared by all frames."""
    values = []
    for f in frames:
        value = frame_noise(f, strict=True)[index]
        if value is None:
            raise SkystackError(f"{f.label}: no {what} in the header (--reject ccdclip needs "
                                f"{option} or the keyword in every frame)")
        values.append(value)
    if any(v != values[0] for v in values):
        k = next(i for i, v in enumerate(values) if v != values[0])
        raise SkystackError(f"{frames[k].label}: {what} {values[k]:g} differs from "
                            f"{values[0]:g} of {frames[0].label} (--reject ccdclip uses one "
                            f"noise model: give {option})")
    return values[0]


def resolve_ccd_noise(frames, options: CombineOptions) -> CombineOptions:
    """``options`` with ``gain`` and ``rdnoise`` set for ``--reject ccdclip`` (from the headers
    where not given; one-line error naming the frame that lacks or disagrees). Other rejections:
    ``options`` unchanged."""
    if options.reject != "ccdclip" or (options.gain is not None and options.rdnoise is not None):
        return options
    gain = options.gain
    if gain is None:
        gain = _agreed(frames, 0, "GAIN (e-/ADU)", "--gain")
    rdnoise = options.rdnoise
    if rdnoise is None:
        rdnoise = _agreed(frames, 1, "RDNOISE (e-)", "--rdnoise")
    return replace(options, gain=gain, rdnoise=rdnoise)


def check_ccdclip_scaling(options: CombineOptions, scale: np.ndarray, zero: np.ndarray) -> None:
    """Refuse ``--reject ccdclip`` on frames normalised differently (module docstring)."""
    if options.reject != "ccdclip":
        return
    if options.gain is None or options.rdnoise is None:
        raise SkystackError("--reject ccdclip: gain and read noise not resolved "
                            "(skystack.rejection_noise.resolve_ccd_noise)")
    if np.any(scale != scale[0]) or np.any(zero != zero[0]):
        raise SkystackError("--reject ccdclip cannot clip frames normalised differently "
                            f"(--scale {options.scale}, --zero {options.zero}): its noise model "
                            "applies to raw values; combine without --scale/--zero")


def check_ccdclip_resampling(options: CombineOptions, conserve_flux: bool) -> None:
    """Refuse ``--reject ccdclip`` on flux-conserving stacks: the pixel-area factor rescales each
    output pixel's values, so the noise model of the raw values would no longer describe them."""
    if options.reject == "ccdclip" and conserve_flux:
        raise SkystackError("--reject ccdclip cannot clip flux-conserving stacks (the pixel-area "
                            "factor rescales the values its noise model describes); drop "
                            "--conserve-flux or use another rejection")


def stat_rejection_cards(header, options: CombineOptions) -> None:
    """The product header's record of the esd, ccdclip and pclip options (others: nothing)."""
    r = options.reject
    if r == "esd":
        header["ESDALPHA"] = (options.esd_alpha, "esd: significance of the ESD test")
        header["ESDMAXF"] = (options.esd_max_frac, "esd: most outliers, fraction of values")
        return
    if r not in ("ccdclip", "pclip"):
        return
    header["SIGLOW"] = (options.sigma_low, f"{r}: lower threshold (sigma)")
    header["SIGHIGH"] = (options.sigma_high, f"{r}: upper threshold (sigma)")
    if r == "pclip":
        header["PCLIP"] = (options.pclip, "pclip: percentile pixel beside the median")
        return
    header["SIGCEN"] = (options.center, "ccdclip: centre")
    if options.gain is not None:
        header["CCDGAIN"] = (options.gain, "ccdclip: gain of the raw values (e-/ADU)")
    if options.rdnoise is not None:
        header["CCDRDN"] = (options.rdnoise, "ccdclip: read noise (e-)")
    header["CCDSNOIS"] = (options.snoise, "ccdclip: sensitivity noise (fraction)")
