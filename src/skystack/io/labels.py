"""Input names as FITS header values (``IMCMBnnn``, ``GRIDREF``, ``REGREF``).

FITS string values are printable ASCII. A file name such as ``ñ_light.fits`` or ``星.fits`` is
written with Python's escapes (``\\xf1_light.fits``, ``\\u661f.fits``) and a backslash as
``\\\\``: the label stays unique (the escaping can be undone, e.g. with
``label.encode().decode("unicode_escape")``) and recognisable; printable ASCII names without a
backslash are unchanged.
"""

from __future__ import annotations

__all__ = ["fits_label"]


def fits_label(text: str) -> str:
    """``text`` as a printable-ASCII FITS value (see module docstring)."""
    return "".join(ch if " " <= ch <= "~" and ch != "\\" else
                   ch.encode("unicode_escape").decode("ascii") for ch in text)
