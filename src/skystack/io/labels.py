"""Names made safe: input names as FITS header values (``IMCMBnnn``, ``GRIDREF``, ``REGREF``:
:func:`fits_label`) and header values as parts of file names (:func:`safe_name`).

FITS string values are printable ASCII. A file name such as ``ñ_light.fits`` or ``星.fits`` is
written with Python's escapes (``\\xf1_light.fits``, ``\\u661f.fits``) and a backslash as
``\\\\``: the label stays unique (the escaping can be undone, e.g. with
``label.encode().decode("unicode_escape")``) and recognisable; printable ASCII names without a
backslash are unchanged.
"""

from __future__ import annotations

import re

__all__ = ["fits_label", "safe_name"]


def fits_label(text: str) -> str:
    """``text`` as a printable-ASCII FITS value (see module docstring)."""
    return "".join(ch if " " <= ch <= "~" and ch != "\\" else
                   ch.encode("unicode_escape").decode("ascii") for ch in text)


def safe_name(text: str, default: str = "unknown") -> str:
    """``text`` as a file-name part: ASCII letters, digits and ``-+.`` kept, every run of other
    characters one ``_``; no leading ``.`` or ``_`` (a name starting with a dot is hidden, and
    ``..`` must not look like a folder), ``default`` when nothing is left. Not one-to-one:
    :class:`skystack.night.names.ProductNames` makes the final names unique."""
    keep = re.sub(r"[^A-Za-z0-9+.-]+", "_", str(text).strip())
    return keep.lstrip("._").rstrip("_") or default
