"""WCS from FITS headers, refusing keywords that astropy would silently read as 0.

wcslib replaces a WCS keyword it cannot parse as a number (``CRVAL1 = 'abc'``, ``CDELT2 = T``)
by its default (0, or 1 for ``CDELT``) with nothing more than a ``FITSFixedWarning``: a frame
would be placed at RA 0 and the union grid stretched across the sky to reach it. Here such a
keyword is a one-line error naming the source and the keyword.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from ..errors import SkystackError

__all__ = ["parse_header_wcs", "TIME_KEYS", "wcs_cards"]

# wcslib's FITSFixedWarning for a value of the wrong type: "CRVAL1 = 'abc ' \na floating-point
# value was expected." (or "an integer value was expected.").
_UNPARSABLE = re.compile(r"value was expected", re.IGNORECASE)


def parse_header_wcs(header: fits.Header, source: str, naxis=None) -> WCS:
    """astropy's WCS of ``header``; :class:`SkystackError` naming ``source`` when astropy cannot
    build it or when a WCS keyword's value is not a number (astropy would use 0 instead).

    ``naxis`` is passed to :class:`astropy.wcs.WCS`. The result need not be celestial."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=naxis)
        except Exception as exc:  # astropy raises many kinds for broken WCS keywords
            raise SkystackError(f"{source}: invalid WCS ({_reason(exc)})") from None
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, FITSFixedWarning) and _UNPARSABLE.search(text):
            card = re.sub(r"'([^']*?)\s+'", r"'\1'", " ".join(text.split("\n")[0].split()))
            raise SkystackError(f"{source}: invalid WCS: {card} is not a number")
    _check_cd(header, source)
    return wcs


def _reason(exc: Exception) -> str:
    """One line from an astropy/wcslib error: wcslib's messages are 'ERROR n in f() at line l
    of file x:' lines, each followed by what went wrong; the last such text is the most
    specific ('PCi_ja matrix is singular.')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("ERROR ")]
    return (said or lines or [type(exc).__name__])[-1]


def _check_cd(header: fits.Header, source: str) -> None:
    """wcslib takes a CD matrix of zeros for no CD matrix at all (1 degree per pixel): refuse a
    header whose CD1_1..CD2_2 (absent ones 0) form a singular matrix."""
    keys = [[f"CD{i}_{j}" for j in (1, 2)] for i in (1, 2)]
    if not any(k in header for row in keys for k in row):
        return
    try:
        cd = np.array([[float(header.get(k, 0.0)) for k in row] for row in keys])
    except (TypeError, ValueError):
        return  # not numbers: reported by the parse above
    biggest = float(np.abs(cd).max())
    if not biggest > 0 or not abs(float(np.linalg.det(cd))) > 1e-12 * biggest ** 2:
        raise SkystackError(f"{source}: invalid WCS: the CD matrix is singular "
                            f"(CD1_1..CD2_2 = {' '.join(f'{v:g}' for v in cd.ravel())})")


# Time keywords a WCS header may carry (FITS WCS paper VII): they date the frame the WCS came
# from, not the product, and are never copied from a WCS into a product's header.
TIME_KEYS = frozenset((
    "DATE-OBS", "DATE-BEG", "DATE-AVG", "DATE-END", "MJD-OBS", "MJD-BEG", "MJD-AVG", "MJD-END",
    "JEPOCH", "BEPOCH", "TSTART", "TSTOP", "XPOSURE", "TELAPSE", "TIMESYS", "TREFPOS",
    "TREFDIR", "PLEPHEM", "TIMEUNIT", "DATEREF", "MJDREF", "MJDREFI", "MJDREFF", "JDREF",
    "JDREFI", "JDREFF", "TIMEOFFS", "TIMSYER", "TIMRDER", "TIMEDEL", "TIMEPIXR"))


def wcs_cards(wcs) -> fits.Header:
    """``wcs.to_header(relax=True)`` without its time keywords (:data:`TIME_KEYS`): what a
    product takes from a frame's or a reference grid's WCS."""
    header = wcs.to_header(relax=True)
    for key in TIME_KEYS & set(header.keys()):
        del header[key]
    return header
