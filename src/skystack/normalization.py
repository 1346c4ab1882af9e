"""Per-frame scale, zero offset and weights, estimated before the tile loop.

Conventions (IRAF ``imcombine``-like, normalised to the first frame):

* ``scale``: frame k is multiplied by ``s_k = S_0 / S_k`` where S is the frame's median, its
  sigma-clipped mean (3 sigma, 5 iterations), or for ``exposure`` its EXPTIME.
* EXPTIME, for ``scale="exposure"`` or EXPTIME weights, must be a positive finite number of
  seconds, at most 1e6 (:mod:`skystack.exposure`); otherwise a one-line error names the file.
* ``zero``: after scaling, ``z_k = Z_0 - s_k Z_k`` is added, Z being the median or clipped mean.
* The combined value is computed on ``v * s_k + z_k`` (float32 arithmetic).
* Measured from the pixels (:mod:`skystack.frame_measures`): ``scale`` ``stars`` (star flux
  ratios) or ``regression``, ``zero`` ``regression``, weights ``bgnoise``, ``stars`` and
  ``psf-signal``.

Statistics come from a sample of 32 evenly spaced bands of rows, about a million pixels per frame
(every row of frames smaller than that), NaNs ignored; this reads a small fraction of a large
stack in a few dozen reads per frame.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .config import CombineOptions
from .core.frame import Frame
from .core.records import FrameParams
from .errors import SkystackError
from .exposure import exptime_problem
from .frame_measures import MEASURED_SCALES, MEASURED_WEIGHTS, cached, measure
from .sampling import SAMPLE_BANDS, SAMPLE_PIXELS, frame_sample, read_rows, sample_rows

__all__ = ["SAMPLE_BANDS", "SAMPLE_PIXELS", "frame_sample", "read_rows", "sample_rows",
           "normalization", "frame_params", "frame_weights", "frame_statistic"]


def frame_statistic(frame: Frame, kind: str, rows: np.ndarray) -> float:
    """Median or sigma-clipped mean of a frame's sampled pixels."""
    values = frame_sample(frame, rows)
    if values.size == 0:
        raise SkystackError(f"{frame.label}: no valid pixels to estimate its {kind}")
    if kind == "median":
        return float(np.median(values))
    from astropy.stats import sigma_clipped_stats

    mean, _, _ = sigma_clipped_stats(values, sigma=3.0, maxiters=5)
    return float(mean)


def header_number(frame: Frame, key: str, purpose: str) -> float:
    """A finite numeric header value, or an error naming the file and the keyword."""
    if key not in frame.header:
        raise SkystackError(f"{frame.label}: no {key} keyword (needed for {purpose})")
    if isinstance(frame.header[key], bool):  # T/F: float(True) would be a silent 1
        raise SkystackError(f"{frame.label}: {key} = {frame.header[key]} is not a number")
    try:
        value = float(frame.header[key])
    except (TypeError, ValueError):
        raise SkystackError(f"{frame.label}: {key} = {frame.header[key]!r} is not a number") \
            from None
    if not math.isfinite(value):
        raise SkystackError(f"{frame.label}: {key} is not finite")
    return value


def exposure_time(frame: Frame, purpose: str) -> float:
    """A frame's EXPTIME in seconds, or a one-line error naming the file when it is missing
    or not a usable exposure (see :mod:`skystack.exposure`: positive, finite, <= 1e6 s)."""
    header_number(frame, "EXPTIME", purpose)  # missing or not a number: its own message
    problem = exptime_problem(frame.header["EXPTIME"])
    if problem:
        raise SkystackError(f"{frame.label}: {problem} (needed for {purpose})")
    return float(frame.header["EXPTIME"])


def normalization(frames: list[Frame], options: CombineOptions, wcs_list=None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``(scale, zero)`` as float32 arrays (see module docstring; ``stars`` and
    ``regression``: :mod:`skystack.frame_measures`, ``wcs_list`` for a reprojected stack)."""
    key = ("normalization", options.scale, options.zero,
           None if wcs_list is None else tuple(id(w) for w in wcs_list))
    return cached(frames, key, lambda: _normalization(frames, options, wcs_list))


def _normalization(frames: list[Frame], options: CombineOptions, wcs_list,
                   ) -> tuple[np.ndarray, np.ndarray]:
    n = len(frames)
    scale = np.ones(n, np.float64)
    zero = np.zeros(n, np.float64)
    rows = sample_rows(frames[0].shape)
    stats: dict[str, np.ndarray] = {}

    def stat(kind: str) -> np.ndarray:
        if kind not in stats:
            stats[kind] = np.array([frame_statistic(f, kind, rows) for f in frames])
        return stats[kind]

    if options.scale == "exposure":
        t = np.array([exposure_time(f, "--scale exposure") for f in frames])
        scale = t[0] / t
    elif options.scale in ("median", "mean"):
        s = stat(options.scale)
        for f, v in zip(frames, s):
            if v == 0:
                raise SkystackError(f"{f.label}: {options.scale} is 0, cannot scale by it")
        scale = s[0] / s
    elif options.scale in MEASURED_SCALES:
        scale = measured(frames, options, wcs_list).scale
    if options.zero in ("median", "mean"):
        z = stat(options.zero)
        zero = z[0] - scale * z
    elif options.zero == "regression":
        zero = measured(frames, options, wcs_list).zero_fit
    return scale.astype(np.float32), zero.astype(np.float32)


def measured(frames: list[Frame], options: CombineOptions, wcs_list=None):
    """The pixel-measured normalisation and weights (:func:`skystack.frame_measures.measure`),
    the other scale kinds given for the bgnoise weight and the regression zero."""
    plain = replace(options, scale="none") if options.scale in MEASURED_SCALES else options
    plain = replace(plain, zero="none")
    return measure(frames, options, lambda: normalization(frames, plain)[0], wcs_list)


def frame_params(frames: list[Frame], options: CombineOptions, wcs_list=None) -> FrameParams:
    """Scale, zero and weights of each frame, and for the noise-model uncertainty (``options``
    resolved) their gain and read noise (:mod:`skystack.uncertainty`)."""
    from .rejection_noise import check_ccdclip_scaling
    from .uncertainty import noise_arrays

    scale, zero = normalization(frames, options, wcs_list)
    check_ccdclip_scaling(options, scale, zero)
    gain = rdnoise = None
    if options.uncertainty == "model":
        gain, rdnoise = noise_arrays(frames)
    return FrameParams(scale=scale, zero=zero,
                       weights=frame_weights(frames, options, wcs_list),
                       gain=gain, rdnoise=rdnoise)


def frame_weights(frames: list[Frame], options: CombineOptions, wcs_list=None) -> np.ndarray:
    """Per-frame weights (float64, positive); all ones when unweighted.

    Also refuses options that would keep nothing of this many frames: every combine path
    (in-process, GPU streaming, stacking, cluster) gets its weights here before any pixel.
    """
    w = options.weights
    n = len(frames)
    options.check_frame_count(n)
    if not options.weighted:
        return np.ones(n)
    if w.kind == "values":
        if len(w.values) != n:
            raise SkystackError(f"--weights gives {len(w.values)} weights for {n} frames")
        return np.asarray(w.values, np.float64)
    if w.kind in MEASURED_WEIGHTS:  # bgnoise, stars, psf-signal
        return measured(frames, options, wcs_list).weights
    purpose = f"--weights {w.describe()}"
    if w.kind == "exptime":
        return np.array([exposure_time(f, purpose) for f in frames])
    key = w.key
    values = np.array([header_number(f, key, purpose) for f in frames])
    for f, v in zip(frames, values):
        if v <= 0:
            raise SkystackError(f"{f.label}: {key} = {v} is not positive ({purpose})")
    if w.kind == "invvar":
        return 1.0 / values
    if w.kind == "noise":
        return 1.0 / values**2
    return values
