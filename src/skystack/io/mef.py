"""Multi-extension (MEF) inputs: which CCDs a set of mosaic exposures share, and which of their
header cards a per-CCD product keeps.

A mosaic camera writes one file per exposure with one image extension per CCD (DECam 62, HSC
104, ...; often tile-compressed ``.fits.fz``). :func:`match_ccds` pairs the extensions of every
input: by EXTNAME when the first input names each of its image extensions uniquely, else by
position (the k-th image extension). A file missing a CCD, holding one the first input lacks,
or with another shape for it is a one-line :class:`SkystackError` naming the file and the CCD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from astropy.io import fits

from ..errors import SkystackError
from .inputs import ImageHdu, image_extensions

__all__ = ["Ccd", "agreed_cards", "match_ccds", "is_wcs_key"]

# Never copied from the inputs: the FITS structure, the pixel encoding, checksums; and times
# (the provenance writes the product's own DATE-OBS/MJD-OBS...).
_NEVER = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT",
          "GCOUNT", "COMMENT", "HISTORY", "", "BZERO", "BSCALE", "BLANK", "EXTNAME", "EXTVER",
          "CHECKSUM", "DATASUM", "NEXTEND", "INHERIT", "ZIMAGE", "ZCMPTYPE", "ZBITPIX",
          "ZNAXIS", "ZTILE1", "ZTILE2", "ZQUANTIZ", "ZDITHER0", "DATE-OBS", "TIME-OBS",
          "MJD-OBS", "DATE-END", "MJD-END", "DATE-AVG", "MJD-AVG", "DATE",
          # The product's effective noise is the provenance's (skystack.uncertainty): the
          # inputs' GAIN/RDNOISE do not describe a combined image.
          "GAIN", "RDNOISE"}
_WCS_KEY = re.compile(r"^(WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|"
                      r"PC\d_\d|PV\d_\d+|PS\d_\d+|A_|B_|AP_|BP_|LONPOLE|LATPOLE|WCSNAME|"
                      r"RESTFRQ|MJDREF)")


def is_wcs_key(keyword: str) -> bool:
    """Whether ``keyword`` belongs to a WCS (copied whole by the provenance, never card by
    card: a PC matrix from one header beside a CD matrix from another would be a wrong WCS)."""
    return bool(_WCS_KEY.match(keyword))


@dataclass(frozen=True)
class Ccd:
    """One CCD shared by every input: its output ``name`` (the inputs' EXTNAME, or ``HDU<i>``
    where they have none), its ``shape`` and, per input, the HDU index and header of its
    extension (``hdus[j]`` for input ``j``)."""

    name: str
    shape: tuple[int, int]
    hdus: tuple[ImageHdu, ...]


def _by_name(hdus: list[ImageHdu]) -> bool:
    names = [h.extname.upper() for h in hdus if h.extname]
    return len(names) == len(hdus) and len(set(names)) == len(names)


def match_ccds(paths: list[str], hdus: list[int | str] | None = None
               ) -> tuple[list[fits.Header], list[Ccd]]:
    """The inputs' primary headers and the CCDs they all share (see module docstring), in the
    first input's order; ``hdus`` keeps only those named (EXTNAME or HDU index of the first
    input). An input whose only image is in its primary HDU is not multi-extension: an error."""
    if not paths:
        raise SkystackError("no input files")
    primaries: list[fits.Header] = []
    listed: list[list[ImageHdu]] = []
    for path in paths:
        primary, found = image_extensions(path)
        if not found:
            raise SkystackError(f"{path}: no 2-D image extension")
        if len(found) == 1 and found[0].index == 0:
            raise SkystackError(f"{path}: not a multi-extension file (its image is in the "
                                "primary HDU); combine it without --hdu all")
        primaries.append(primary)
        listed.append(found)
    first, first_path = listed[0], paths[0]
    by_name = _by_name(first)
    keys = [h.extname.upper() if by_name else k for k, h in enumerate(first)]

    def label(k: int) -> str:
        return first[k].extname if by_name else f"#{k + 1} (HDU {first[k].index})"

    per_file: list[dict] = []
    for path, found in zip(paths, listed):
        if by_name:
            if not _by_name(found):
                raise SkystackError(f"{path}: its image extensions are not uniquely named by "
                                    f"EXTNAME, as {first_path}'s are")
            table = {h.extname.upper(): h for h in found}
        else:
            table = dict(enumerate(found))
        for key in table:
            if key not in keys:
                what = table[key].extname if by_name else f"image extension #{key + 1}"
                raise SkystackError(f"{path}: has extension {what}, which {first_path} lacks")
        for k, key in enumerate(keys):
            if key not in table:
                raise SkystackError(f"{path}: no extension {label(k)} (which {first_path} has)")
            shape, want = table[key].shape, first[k].shape
            if shape != want:
                raise SkystackError(
                    f"{path}: extension {label(k)} is {shape[0]}x{shape[1]}, "
                    f"{first_path}'s is {want[0]}x{want[1]}")
        per_file.append(table)
    ccds = [Ccd(first[k].extname if by_name else f"HDU{first[k].index}", first[k].shape,
                tuple(table[key] for table in per_file)) for k, key in enumerate(keys)]
    return primaries, _select(ccds, hdus, first_path)


def _select(ccds: list[Ccd], hdus: list[int | str] | None, first_path: str) -> list[Ccd]:
    if hdus is None:
        return ccds
    chosen = []
    for want in hdus:
        match = [c for c in ccds if (c.hdus[0].index == want if isinstance(want, int)
                                     else c.name.upper() == str(want).strip().upper())]
        if not match:
            raise SkystackError(f"{first_path}: no image extension {want!r} to combine")
        chosen.append(match[0])
    return chosen


def agreed_cards(headers: list[fits.Header], exclude=lambda key: False) -> fits.Header:
    """The cards on which every header agrees (same keyword, same value), in the first header's
    order, leaving out structure, encoding, times, GAIN/RDNOISE (see ``_NEVER``) and any
    keyword for which ``exclude(keyword)`` is true."""
    out = fits.Header()
    first = headers[0]
    seen = set()
    for card in first.cards:
        key = card.keyword
        if key in _NEVER or key in seen or exclude(key):
            continue
        seen.add(key)
        value = first[key]
        if all(key in h and h[key] == value for h in headers[1:]):
            out[key] = (value, card.comment)
    return out
