"""Which exposure times can be used: a number of seconds, finite, from :data:`MIN_EXPTIME` to
:data:`MAX_EXPTIME`.

A negative EXPTIME would make a dark scaled to it be *added*, and a weight or scale from it
negative; NaN, infinity or text have no meaning; and a value like 1e308 passes every numeric
check yet overflows a sum of weights or an exposure map. No real exposure lasts longer than
:data:`MAX_EXPTIME` (1e6 s, 11.6 days: far beyond any single CCD or CMOS integration, so a
larger value is a corrupt or placeholder header). An exposure of 0 s is no exposure for a
dark, flat or light frame (only biases have it, and their EXPTIME is never used), and one
below :data:`MIN_EXPTIME` (1 µs, shorter than any shutter) is a corrupt value too: 1e-300 s
would scale a frame by 1e300 (``--scale exposure``) and overflow to infinity.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["MIN_EXPTIME", "MAX_EXPTIME", "EXPTIME_KEYS", "exptime_problem",
           "header_exptime_problem"]

MIN_EXPTIME = 1e-6  # s
MAX_EXPTIME = 1e6  # s
EXPTIME_KEYS = ("EXPTIME", "EXPOSURE")  # first one present wins (as io.provenance)


def exptime_problem(value, key: str = "EXPTIME") -> str | None:
    """Why ``value`` (a header value) is not a usable exposure time, or None if it is."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, str)):
        return f"{key} = {value!r} is not a number"
    try:
        seconds = float(value)
    except ValueError:
        return f"{key} = {value!r} is not a number"
    if not math.isfinite(seconds):
        return f"{key} = {value!r} is not finite"
    if seconds <= 0:
        return f"{key} = {seconds:g} s is not positive"
    if seconds < MIN_EXPTIME:
        return f"{key} = {seconds:g} s is less than {MIN_EXPTIME:g} s: not a real exposure"
    if seconds > MAX_EXPTIME:
        return (f"{key} = {seconds:g} s is more than {MAX_EXPTIME:g} s (11.6 days): not a real "
                "exposure")
    return None


def header_exptime_problem(header) -> str | None:
    """Why a header's exposure time (``EXPTIME``, else ``EXPOSURE``) cannot be used; None when
    it can, or when the header has neither keyword (that case is the caller's to handle)."""
    for key in EXPTIME_KEYS:
        if key in header:
            return exptime_problem(header[key], key)
    return None
