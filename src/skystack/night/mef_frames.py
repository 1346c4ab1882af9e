"""Frames of multi-extension (mosaic) files grouped by CCD: what per-CCD statistics
(``skystack inspect``) group by.

The scan (:func:`skystack.night.scan.scan`) already gives one
:class:`~skystack.night.scan.FrameInfo` per image extension of a mosaic file — the same file,
role, filter, exposure time and date, with the CCD's own shape, HDU index and header (the
extension's cards first, then the primary's it does not have: a CCD's BIASSEC/TRIMSEC/GAIN win
over any in the primary). :func:`split_by_ccd` groups them by CCD name.
"""

from __future__ import annotations

from .scan import ScanResult

__all__ = ["split_by_ccd"]


def split_by_ccd(result: ScanResult) -> dict[str | None, ScanResult]:
    """``result``'s frames by CCD name (``FrameInfo.ccd``): single-image files under ``None``,
    each extension of multi-extension files under its name. The skipped files stay with
    ``None``'s result (or the first CCD's when every file is a mosaic)."""
    out: dict[str | None, ScanResult] = {None: ScanResult(skipped=list(result.skipped))}
    for info in result.frames:
        key = info.ccd if info.hdu is not None else None
        out.setdefault(key, ScanResult()).frames.append(info)
    if not out[None].frames and len(out) > 1:
        skipped = out.pop(None).skipped
        out[next(iter(out))].skipped.extend(skipped)
    return out
