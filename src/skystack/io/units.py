"""The physical unit of the inputs (``BUNIT``), kept through combine, stack and night.

A combine of frames in different units is meaningless (electrons averaged with ADU), so inputs
must agree: a frame without ``BUNIT`` (or a CCDData without a unit) counts as ADU, the unit
skystack assumes for raw data. Spellings of one unit agree (``ADU``/``adu``,
``electron/s``/``electron / s``); a BUNIT astropy cannot parse is compared as text.
"""

from __future__ import annotations

from ..errors import SkystackError

__all__ = ["common_unit", "unit_key"]


def unit_key(text: str | None):
    """What two BUNIT values are compared by: the astropy unit when it parses (``ADU``, which
    astropy does not know, as ``adu``, as its CCDData reader does), else the stripped text;
    ``None`` (no BUNIT) counts as ADU."""
    from astropy import units as u

    if text is None:
        return u.adu
    value = str(text).strip()
    if value.lower() == "adu":
        return u.adu
    try:
        return u.Unit(value)
    except (ValueError, TypeError):
        return value


def common_unit(frames) -> str | None:
    """The inputs' BUNIT (the first frame's spelling), ``None`` when no frame has one (the
    caller then writes ``adu``, assumed); one-line :class:`SkystackError` naming a frame of
    each unit when they differ."""
    first = frames[0]
    first_key = unit_key(first.header.get("BUNIT"))
    for f in frames[1:]:
        if unit_key(f.header.get("BUNIT")) != first_key:
            raise SkystackError(
                f"inputs in different units: {first.label} is in {_describe(first)}, "
                f"{f.label} in {_describe(f)}; combine frames of one unit")
    for f in frames:
        if f.header.get("BUNIT") is not None:
            return str(f.header["BUNIT"]).strip()
    return None


def _describe(frame) -> str:
    value = frame.header.get("BUNIT")
    return "adu (no BUNIT: assumed)" if value is None else repr(str(value).strip())
