"""Bayer colour-filter-array (CFA) patterns read from FITS headers.

Header conventions (N.I.N.A., ASCOM, INDI, Siril, SharpCap, MaxIm DL; see Siril's "Orientation
of FITS images"):

* ``BAYERPAT`` (or, failing that, ``COLORTYP`` when it holds a pattern): the colours of the
  2 x 2 cell at the *first pixel read out* by the camera (its top-left), row by row:
  ``RGGB`` = red, green on the first row read out; green, blue on the next.
* ``XBAYROFF``/``YBAYROFF`` (default 0): the pattern starts that many columns/rows further on,
  i.e. the pixel ``(x, y)`` of readout order has the colour of cell ``((y + YBAYROFF) % 2,
  (x + XBAYROFF) % 2)`` of ``BAYERPAT``.
* ``ROWORDER``: ``TOP-DOWN`` (the first row stored is the first row read out, as most camera
  drivers write) or ``BOTTOM-UP`` (the FITS display convention: the stored rows were flipped,
  so the *last* stored row is the first read out, and for an even number of rows the pattern's
  row parity is flipped: ``RGGB`` reads ``GBRG`` from stored row 0). A header without
  ``ROWORDER`` is taken as ``TOP-DOWN``, as Siril's default and the drivers that predate the
  keyword (which wrote rows as read out) do.

Array convention: ``data[row, col]`` as astropy returns it (row 0 = the first row stored in the
file, FITS pixel y = 1). :meth:`CfaPattern.layout` is the pattern seen from ``data[0, 0]``,
the one ``colour_demosaicing`` and :func:`skystack.colour.debayer` take.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SkystackError

PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
ROW_ORDERS = ("TOP-DOWN", "BOTTOM-UP")
CFA_KEYS = ("BAYERPAT", "XBAYROFF", "YBAYROFF", "ROWORDER")
CHANNELS = "RGB"  # channel index 0, 1, 2 of :meth:`CfaPattern.channel_map`


@dataclass(frozen=True)
class CfaPattern:
    """A Bayer pattern as declared in a header (see module docstring for the conventions)."""

    name: str
    x_offset: int = 0
    y_offset: int = 0
    row_order: str = "TOP-DOWN"

    def colour_at(self, row: int, col: int, height: int) -> str:
        """``"R"``, ``"G"`` or ``"B"``: the filter over ``data[row, col]`` of an image of
        ``height`` rows (the height matters only for ``BOTTOM-UP``)."""
        readout_row = row if self.row_order == "TOP-DOWN" else height - 1 - row
        cell_row = (readout_row + self.y_offset) % 2
        cell_col = (col + self.x_offset) % 2
        return self.name[2 * cell_row + cell_col]

    def layout(self, shape: tuple[int, int]) -> str:
        """The pattern seen from ``data[0, 0]`` of an image of ``shape`` (rows, cols): the
        colours of ``data[0, 0]``, ``data[0, 1]``, ``data[1, 0]``, ``data[1, 1]``."""
        return "".join(self.colour_at(r, c, shape[0]) for r in (0, 1) for c in (0, 1))

    def channel_map(self, shape: tuple[int, int]) -> np.ndarray:
        """int8 array of ``shape``: 0 where the photosite is red, 1 green, 2 blue."""
        cell = np.array([CHANNELS.index(ch) for ch in self.layout(shape)], np.int8).reshape(2, 2)
        reps = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
        return np.tile(cell, reps)[: shape[0], : shape[1]]

    def cropped(self, r0: int, c0: int, shape: tuple[int, int],
                new_shape: tuple[int, int]) -> CfaPattern:
        """The pattern of ``data[r0:r0 + new_shape[0], c0:c0 + new_shape[1]]`` of an image
        of ``shape`` (trimming by an odd number of rows or columns moves the pattern): same
        name and row order, offsets chosen so that every photosite keeps its colour."""
        want = "".join(self.colour_at(r0 + r, c0 + c, shape[0]) for r in (0, 1) for c in (0, 1))
        for yoff in (0, 1):
            for xoff in (0, 1):
                candidate = CfaPattern(self.name, xoff, yoff, self.row_order)
                if candidate.layout(new_shape) == want:
                    return candidate
        raise AssertionError("unreachable: every 2x2 shift of a Bayer cell is reachable")

    def cards(self) -> list[tuple[str, object, str]]:
        """Header cards (keyword, value, comment) declaring this pattern."""
        return [("BAYERPAT", self.name, "Bayer pattern of the first pixel read out"),
                ("XBAYROFF", self.x_offset, "Bayer pattern column offset"),
                ("YBAYROFF", self.y_offset, "Bayer pattern row offset"),
                ("ROWORDER", self.row_order, "order of the rows stored")]


def _offset(header, key: str, label: str) -> int:
    value = header.get(key, 0)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SkystackError(f"{label}: {key} = {value!r} is not a number") from None
    if not number.is_integer() or number < 0:
        raise SkystackError(f"{label}: {key} = {value!r} is not a whole number >= 0")
    return int(number) % 2


def cfa_pattern(header, label: str = "header") -> CfaPattern | None:
    """The Bayer pattern a header declares, or None for a monochrome frame.

    ``BAYERPAT`` is read first; ``COLORTYP`` counts only when it holds one of
    :data:`PATTERNS` (some writers use it for other colour descriptions). An unknown pattern,
    offset or ``ROWORDER`` is a :class:`SkystackError` naming ``label``: guessing would give
    wrong colours without a sign."""
    raw = header.get("BAYERPAT")
    key = "BAYERPAT"
    if raw is None or str(raw).strip() == "":
        colortyp = str(header.get("COLORTYP", "")).strip().upper()
        if colortyp not in PATTERNS:
            return None
        raw, key = colortyp, "COLORTYP"
    name = str(raw).strip().upper()
    if name not in PATTERNS:
        raise SkystackError(f"{label}: {key} = {raw!r} is not a Bayer pattern "
                            f"({', '.join(PATTERNS)})")
    order = str(header.get("ROWORDER", "TOP-DOWN")).strip().upper() or "TOP-DOWN"
    if order not in ROW_ORDERS:
        raise SkystackError(f"{label}: ROWORDER = {header.get('ROWORDER')!r} is not "
                            "TOP-DOWN or BOTTOM-UP")
    return CfaPattern(name, _offset(header, "XBAYROFF", label),
                      _offset(header, "YBAYROFF", label), order)


def common_cfa(frames) -> CfaPattern | None:
    """The Bayer pattern shared by ``frames`` (records with ``header``, ``shape`` and
    ``label``), or None when all are monochrome. Frames mixing colour and monochrome data,
    or whose photosites differ in colour, are a :class:`SkystackError`: combining them pixel
    by pixel would mix colours."""
    first = None
    for frame in frames:
        pattern = cfa_pattern(frame.header, frame.label)
        if first is None:
            first = (frame, pattern)
            continue
        f0, p0 = first
        if (p0 is None) != (pattern is None):
            colour, mono = (f0, frame) if p0 is not None else (frame, f0)
            raise SkystackError(f"{mono.label}: monochrome frame mixed with colour (Bayer) "
                                f"frame {colour.label}")
        if pattern is not None and pattern.layout(frame.shape) != p0.layout(f0.shape):
            raise SkystackError(f"{frame.label}: Bayer layout {pattern.layout(frame.shape)} "
                                f"differs from {f0.label}'s {p0.layout(f0.shape)}")
    return None if first is None else first[1]


def refuse_resampled_cfa(frames, as_mono: bool) -> CfaPattern | None:
    """Stop a resampling stack of colour (Bayer) frames unless ``as_mono``: resampling mixes
    the red, green and blue photosites into meaningless values. The error names the first
    colour frame and the two ways on (debayer first, or ask for mono explicitly). Returns the
    frames' pattern (None for monochrome frames)."""
    pattern = common_cfa(frames)
    if pattern is not None and not as_mono:
        raise SkystackError(
            f"{frames[0].label}: colour (Bayer {pattern.name}) frames would be resampled as "
            "monochrome, mixing their colours: debayer them (skystack stack --debayer, "
            "skystack.api_colour.stack_debayered), or give --cfa-as-mono (cfa_as_mono=True) "
            "to stack the raw mosaic as mono")
    return pattern


def mark_resampled_cfa(header) -> None:
    """Drop the Bayer cards from the header of a resampled product (its pixels no longer sit
    on photosites) and say that colour frames were stacked as mono (``CFAMONO``)."""
    if "BAYERPAT" not in header:
        return
    for key in CFA_KEYS:
        header.remove(key, ignore_missing=True)
    header["CFAMONO"] = (True, "colour (Bayer) frames resampled as mono on request")
