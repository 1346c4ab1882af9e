"""Frames of multi-extension (mosaic) files, one per CCD: what per-CCD statistics and
calibration group by.

A scanned frame (:class:`skystack.night.scan.FrameInfo`) describes a file by its first image
HDU. For a file with several image extensions, :func:`split_by_ccd` gives one
:class:`CcdFrame` per extension — the same file, role, filter, exposure time and date, with the
CCD's own shape, HDU index and header (the extension's cards first, then the primary's it does
not have: a CCD's BIASSEC/TRIMSEC/GAIN win over any in the primary) — grouped by CCD name.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from astropy.io import fits

from ..errors import SkystackError
from ..io.inputs import image_extensions
from .scan import FrameInfo, ScanResult

__all__ = ["CcdFrame", "ccd_header", "split_by_ccd"]


@dataclass(frozen=True)
class CcdFrame(FrameInfo):
    """One CCD (image extension ``hdu``, named ``ccd``: its EXTNAME, else ``HDU<i>``) of a
    scanned multi-extension frame."""

    hdu: int = 0
    ccd: str = ""


def ccd_header(extension: fits.Header, primary: fits.Header) -> fits.Header:
    """The extension's header completed with the primary's cards it lacks (never replaced)."""
    header = extension.copy()
    for card in primary.cards:
        if card.keyword not in header and card.keyword not in ("COMMENT", "HISTORY", ""):
            header.append(card, end=True)
    return header


def split_by_ccd(result: ScanResult) -> dict[str | None, ScanResult]:
    """``result``'s frames by CCD name: single-image files under ``None`` (as scanned), each
    extension of multi-extension files under its name. The skipped files stay with ``None``'s
    result only. A file whose extensions cannot be read again is skipped with the reason."""
    out: dict[str | None, ScanResult] = {None: ScanResult(skipped=list(result.skipped))}
    for info in result.frames:
        try:
            primary, found = image_extensions(info.path)
        except SkystackError:
            found = []
        if len(found) <= 1:
            out[None].frames.append(info)
            continue
        base = {f.name: getattr(info, f.name) for f in fields(FrameInfo)}
        for ext in found:
            name = ext.extname if ext.extname is not None else f"HDU{ext.index}"
            frame = CcdFrame(**{**base, "shape": ext.shape,
                                "header": ccd_header(ext.header, primary)},
                             hdu=ext.index, ccd=name)
            out.setdefault(name, ScanResult()).frames.append(frame)
    if not out[None].frames and len(out) > 1:
        skipped = out.pop(None).skipped
        out[next(iter(out))].skipped.extend(skipped)
    return out
