"""Sending WCS objects to workers without changing a single bit of the pixel maps.

Pickling an astropy ``WCS`` goes through a FITS header written with 12 significant digits, so
the worker's copy differs from the client's by ~1e-12 degree: enough to change the last bit of
some resampled values, and a cluster stack would not be identical to the in-process one.
Instead a WCS travels as header *text* that rebuilds it exactly:

* a frame's WCS as the frame's own header text, rebuilt on the worker by the same
  :func:`skystack.core.grid.frame_wcs` the in-process run used (astropy builds a WCS from the
  header's text, so this is the very same input);
* the output grid's WCS as wcslib's header with 17 significant digits (``WCSHDO_P17``, exact
  for doubles) plus astropy's SIP cards.

Each rebuilt WCS is checked on the client, bit for bit, on sample points in both directions.
If a WCS cannot be reproduced that way (e.g. lookup-table distortions), it is pickled as is and
a warning says the product may differ from the in-process one in the last bits.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["WcsText", "frame_wcs_text", "grid_wcs_text"]

log = logging.getLogger("skystack")


@dataclass(frozen=True)
class WcsText:
    """A WCS as header text (``kind`` "frame": rebuilt by ``frame_wcs``; "grid": by ``WCS``),
    or, when that is not exact, the pickled ``fallback``."""

    kind: str
    text: str | None = None
    label: str = ""
    fallback: WCS | None = None

    def build(self) -> WCS:
        if self.text is None:
            return self.fallback
        header = fits.Header.fromstring(self.text)
        if self.kind == "frame":
            from ..core.frame import Frame
            from ..core.grid import frame_wcs

            return frame_wcs(Frame(self.label, (0, 0), header, None))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return WCS(header)


def _sample(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = shape
    t = np.array([-0.5, 0.0, 0.173, 0.5, 0.781, 1.0, 1.3])
    x, y = np.meshgrid(t * max(cols - 1, 1), t * max(rows - 1, 1))
    return x.ravel(), y.ravel()


def _identical(a: WCS, b: WCS, shape: tuple[int, int]) -> bool:
    """Whether ``a`` and ``b`` map sample pixels to world and back bit for bit."""
    x, y = _sample(shape)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wa = np.array(a.pixel_to_world_values(x, y))
            wb = np.array(b.pixel_to_world_values(x, y))
            if not np.array_equal(wa, wb, equal_nan=True):
                return False
            return np.array_equal(np.array(a.world_to_pixel_values(*wa)),
                                  np.array(b.world_to_pixel_values(*wa)), equal_nan=True)
        except Exception:  # any failure means "not reproducible"
            return False


def _checked(candidate: WcsText, original: WCS, shape, what: str) -> WcsText:
    try:
        rebuilt = candidate.build()
    except Exception:
        rebuilt = None
    if rebuilt is not None and _identical(original, rebuilt, shape):
        return candidate
    log.warning("%s: WCS cannot be sent to workers exactly; the cluster product may differ "
                "from the in-process one in the last bits", what)
    return WcsText(candidate.kind, None, candidate.label, original)


def frame_wcs_text(frame, wcs: WCS) -> WcsText:
    """A frame's WCS (made by ``frame_wcs(frame)``) as its header text."""
    return _checked(WcsText("frame", frame.header.tostring(), frame.label), wcs, frame.shape,
                    frame.label)


def grid_wcs_text(wcs: WCS, shape: tuple[int, int]) -> WcsText:
    """The output grid's WCS as 17-digit header text (SIP cards included)."""
    from astropy.wcs import WCSHDO_P17, WCSHDO_all

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = fits.Header.fromstring(wcs.to_header(relax=WCSHDO_all | WCSHDO_P17)
                                        .tostring())
        if wcs.sip is not None:
            for card in wcs.to_header(relax=True).cards:
                key = card.keyword
                if key.startswith(("A_", "B_", "AP_", "BP_", "CTYPE")):
                    header[key] = (card.value, card.comment)
    return _checked(WcsText("grid", header.tostring()), wcs, shape, "output grid")
